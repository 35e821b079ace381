"""Webhook signing secrets at rest: encrypted with Fernet keys from the settings before they are
written to the endpoints topic (`notify.secret_keys`; MultiFernet: the first key encrypts, every
key decrypts, so keys can be rotated). Pure: keys are passed in.

A stored secret is either `fernet:<token>` or, written before encryption existed, the clear
`whsec_…`: that still loads, and is encrypted the next time its endpoint is written."""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

SEALED_PREFIX = "fernet:"
KEYS_SETTING = "notify.secret_keys (SKIPWATCH_NOTIFY__SECRET_KEYS)"


class SecretsUnreadable(RuntimeError):
    """Stored secrets that the configured keys cannot read (or no key is configured)."""


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED_PREFIX)


def check_key(key: str) -> str:
    """The key if Fernet accepts it, else ValueError (never quoting the key)."""
    try:
        Fernet(key)
    except (ValueError, TypeError):
        raise ValueError(
            "not a Fernet key (32 url-safe base64-encoded bytes; make one with "
            '`python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`)'
        ) from None
    return key


class SecretBox:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("a SecretBox needs at least one key")
        self._fernet = MultiFernet([Fernet(check_key(k)) for k in keys])

    def seal(self, stored: str) -> str:
        """The secret as it is written: encrypted with the first key (a clear secret is
        encrypted; an encrypted one is re-encrypted with the first key, so rotating keys
        converges as endpoints are written)."""
        if is_sealed(stored):
            token = self._fernet.rotate(stored[len(SEALED_PREFIX) :].encode())
        else:
            token = self._fernet.encrypt(stored.encode())
        return SEALED_PREFIX + token.decode()

    def open(self, stored: str) -> str:
        """The clear secret (a clear one as it is); SecretsUnreadable when no key fits."""
        if not is_sealed(stored):
            return stored
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretsUnreadable(
                f"a webhook secret was encrypted with a key that is not in {KEYS_SETTING}"
            ) from None


def open_secret(box: SecretBox | None, stored: str) -> str:
    """`box.open`, or the clear secret without a box; SecretsUnreadable for an encrypted one."""
    if box is not None:
        return box.open(stored)
    if is_sealed(stored):
        raise SecretsUnreadable(f"webhook secrets are encrypted but {KEYS_SETTING} is not set")
    return stored
