"""`skipwatch up`'s local credentials: made once, completed when an older file lacks one."""

import json
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from services.local import dev_credentials
from services.settings import Settings

pytestmark = pytest.mark.unit


def test_fresh_credentials_include_a_working_notify_key(tmp_path: Path) -> None:
    creds = dev_credentials(tmp_path)
    assert set(creds) == {"admin", "operator", "viewer", "ingest_simulator", "notify_secret_key"}
    key = creds["notify_secret_key"]
    assert Fernet(key).decrypt(Fernet(key).encrypt(b"whsec_x")) == b"whsec_x"
    settings = Settings(notify={"secret_keys": [key]})  # type: ignore[arg-type]
    assert settings.notify.secret_keys[0].get_secret_value() == key
    assert (tmp_path / "dev-credentials.json").stat().st_mode & 0o777 == 0o600
    assert dev_credentials(tmp_path) == creds  # made once


def test_an_older_file_gets_the_missing_key_and_keeps_its_tokens(tmp_path: Path) -> None:
    old = {
        "admin": "a" * 32,
        "operator": "o" * 32,
        "viewer": "v" * 32,
        "ingest_simulator": "i" * 32,
    }
    (tmp_path / "dev-credentials.json").write_text(json.dumps(old))
    creds = dev_credentials(tmp_path)
    assert {k: creds[k] for k in old} == old
    Fernet(creds["notify_secret_key"])  # a valid key
    assert json.loads((tmp_path / "dev-credentials.json").read_text()) == creds
