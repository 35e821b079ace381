"""Webhook secrets at rest (services/notify/sealing.py): Fernet encryption, key rotation, clear
records from before encryption, and errors that never quote a key or a secret."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from services.notify.records import EndpointRecord, KeyRecord
from services.notify.sealing import SEALED_PREFIX, SecretBox, SecretsUnreadable, open_secret
from services.notify.signing import new_secret
from services.settings import (
    DEV_NOTIFY_SECRET_KEY,
    PROJECT_ROOT,
    NotifySettings,
    Settings,
    SettingsError,
    load_settings,
)
from tests.unit.notify.factories import T0

pytestmark = pytest.mark.unit

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def endpoint(secret: str) -> EndpointRecord:
    return EndpointRecord(id="ep_1", url="https://hooks.example/x", keys=[KeyRecord(secret=secret)],
                          created_at=T0)  # fmt: skip


def test_a_sealed_secret_opens_to_the_clear_one_and_does_not_contain_it() -> None:
    secret = new_secret()
    box = SecretBox([OLD])
    sealed = box.seal(secret)
    assert sealed.startswith(SEALED_PREFIX) and secret not in sealed
    assert secret.removeprefix("whsec_") not in sealed
    assert box.open(sealed) == secret
    assert box.seal(secret) != sealed  # a fresh IV each time


def test_rotation_the_first_key_encrypts_every_key_decrypts() -> None:
    secret = new_secret()
    with_old = SecretBox([OLD]).seal(secret)
    rotating = SecretBox([NEW, OLD])
    assert rotating.open(with_old) == secret
    resealed = rotating.seal(with_old)  # what the next write of the endpoint stores
    assert SecretBox([NEW]).open(resealed) == secret
    with pytest.raises(SecretsUnreadable, match=r"not in notify\.secret_keys"):
        SecretBox([OLD]).open(resealed)


def test_a_clear_secret_from_before_encryption_still_loads_and_is_sealed_on_the_next_write() -> (
    None
):
    secret = new_secret()
    legacy = EndpointRecord.model_validate_json(endpoint(secret).model_dump_json())
    assert legacy.keys[0].key(None).secret == secret  # readable without a key, as before
    written = legacy.sealed(SecretBox([OLD]))
    assert secret not in written.model_dump_json()
    assert written.keys[0].key(SecretBox([OLD])).secret == secret


def test_an_encrypted_secret_without_keys_is_refused_naming_the_setting() -> None:
    sealed = SecretBox([OLD]).seal(new_secret())
    with pytest.raises(SecretsUnreadable, match="SKIPWATCH_NOTIFY__SECRET_KEYS"):
        open_secret(None, sealed)


def test_a_record_never_shows_its_secret_in_repr() -> None:
    secret = new_secret()
    assert secret not in repr(endpoint(secret)) and secret not in str(endpoint(secret))


def test_a_stored_secret_must_be_sealed_or_a_webhook_secret() -> None:
    with pytest.raises(ValueError, match="starts with 'whsec_'"):
        KeyRecord(secret="plain-text")


def test_settings_refuse_a_bad_key_without_quoting_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKIPWATCH_NOTIFY__SECRET_KEYS", f'["{OLD}", "not-a-key-xyz"]')
    with pytest.raises(
        SettingsError, match=r"SKIPWATCH_NOTIFY__SECRET_KEYS: .*key 1: not a Fernet"
    ):
        load_settings()
    try:
        load_settings()
    except SettingsError as exc:
        assert "not-a-key-xyz" not in str(exc) and OLD not in str(exc)
    settings = NotifySettings.model_validate({"secret_keys": [NEW, OLD]})
    assert NEW not in repr(settings) and OLD not in repr(settings)


def test_prod_refuses_the_compose_dev_key() -> None:
    compose = (PROJECT_ROOT / "docker-compose.yml").read_text()
    assert DEV_NOTIFY_SECRET_KEY in compose
    Settings.model_validate({"env": "dev", "notify": {"secret_keys": [DEV_NOTIFY_SECRET_KEY]}})
    with pytest.raises(ValueError, match="dev key"):
        Settings.model_validate({"env": "prod", "notify": {"secret_keys": [DEV_NOTIFY_SECRET_KEY]}})
