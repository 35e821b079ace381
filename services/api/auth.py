"""Credentials → principals, and the rules for what each principal may do. No web framework here.

Two kinds of credential (DESIGN §6):
- user tokens (`settings.auth.tokens`) carry a role, ordered viewer < operator < admin;
- vendor ingest keys (`settings.auth.ingest_keys`) carry a vendor name and may only ingest GPS data.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from services.api.errors import AuthenticationError, PermissionDenied, SignatureError
from services.settings import AuthSettings

SIGNATURE_HEADER = "X-Skipwatch-Signature"
_SIGNATURE_SCHEME = "sha256="


class Role(IntEnum):
    """User roles; a higher value includes every right of the lower ones."""

    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Role:
        return cls[name.upper()]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. `role` is None for vendor ingest keys, `vendor` is None for user tokens."""

    kind: Literal["user", "vendor"]
    role: Role | None = None
    vendor: str | None = None

    @property
    def name(self) -> str:
        """A loggable label: the role or the vendor, never the secret."""
        if self.kind == "vendor":
            return f"vendor:{self.vendor}"
        assert self.role is not None
        return self.role.name.lower()

    def has_role(self, minimum: Role) -> bool:
        return self.role is not None and self.role >= minimum


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class Authenticator:
    """Resolves a presented credential. Lookups are by SHA-256 digest of the credential, so the
    dictionary probe never compares the secret itself byte by byte (no timing side channel)."""

    def __init__(self, auth: AuthSettings) -> None:
        self._principals: dict[bytes, Principal] = {}
        for token, role in auth.tokens.items():
            self._principals[_digest(token)] = Principal(kind="user", role=Role.parse(role))
        for key, vendor in auth.ingest_keys.items():
            self._principals[_digest(key)] = Principal(kind="vendor", vendor=vendor)
        self._hmac_secrets = {
            vendor: secret.get_secret_value().encode()
            for vendor, secret in auth.vendor_hmac_secrets.items()
        }

    def authenticate(self, bearer: str | None, api_key: str | None) -> Principal:
        """The principal for a bearer token or an `X-Api-Key` value (401 when neither is known)."""
        credential, field = (api_key, "X-Api-Key") if api_key else (bearer, "Authorization")
        if not credential:
            raise AuthenticationError(
                "credential required: 'Authorization: Bearer <token>' or 'X-Api-Key: <key>'"
            )
        principal = self._principals.get(_digest(credential))
        if principal is None:
            raise AuthenticationError("unknown or revoked credential", field=field)
        return principal

    def requires_signature(self, principal: Principal) -> bool:
        return principal.vendor is not None and principal.vendor in self._hmac_secrets

    def verify_signature(self, principal: Principal, body: bytes, header: str | None) -> None:
        """Check `X-Skipwatch-Signature: sha256=<hex HMAC-SHA256 of the raw body>` when the vendor
        has a secret configured; a no-op for everyone else."""
        if principal.vendor is None or principal.vendor not in self._hmac_secrets:
            return
        if header is None:
            raise SignatureError(
                f"{SIGNATURE_HEADER} is required for vendor {principal.vendor!r}",
                field=SIGNATURE_HEADER,
            )
        if not header.startswith(_SIGNATURE_SCHEME):
            raise SignatureError(
                f"{SIGNATURE_HEADER} must be 'sha256=<hex digest>'", field=SIGNATURE_HEADER
            )
        expected = hmac.new(self._hmac_secrets[principal.vendor], body, hashlib.sha256).hexdigest()
        given = header[len(_SIGNATURE_SCHEME) :].strip().lower()
        if not hmac.compare_digest(expected, given):
            raise SignatureError(
                "signature does not match the body (HMAC-SHA256 over the raw request bytes)",
                field=SIGNATURE_HEADER,
            )


def sign_body(secret: str, body: bytes) -> str:
    """The header value a vendor sends (used by tests, the benchmark and the docs)."""
    return _SIGNATURE_SCHEME + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def require_role(principal: Principal, minimum: Role) -> None:
    if principal.kind == "vendor":
        raise PermissionDenied("vendor ingest keys may only call the GPS ingest routes")
    if not principal.has_role(minimum):
        raise PermissionDenied(f"requires the {minimum.name.lower()} role")


def require_gps_ingest(principal: Principal) -> None:
    """GPS ingest: any vendor key, or a user token with at least the operator role."""
    if principal.kind == "vendor":
        return
    require_role(principal, Role.OPERATOR)
