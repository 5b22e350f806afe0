"""API keys: create, list, revoke and verify, with only hashes on disk."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from click.testing import CliRunner

from rag.cli import cli
from rag.errors import InputError, RagError
from rag.keys import (
    create_key,
    keys_enabled,
    keys_file,
    list_keys,
    revoke_key,
    verify_key,
)
from rag.settings import Settings


def test_keys_are_off_until_the_first_is_created(tiny_settings: Settings) -> None:
    assert not keys_enabled(tiny_settings)
    assert list_keys(tiny_settings) == []
    assert verify_key(tiny_settings, "rag_anything") is None

    create_key(tiny_settings, "mobile")

    assert keys_enabled(tiny_settings)


def test_create_verify_list_and_revoke(tiny_settings: Settings) -> None:
    mobile = create_key(tiny_settings, "mobile")
    partner = create_key(tiny_settings, "partner.eu_1")

    assert mobile.startswith("rag_") and len(mobile) == 4 + 43
    assert mobile != partner
    assert verify_key(tiny_settings, mobile) == "mobile"
    assert verify_key(tiny_settings, partner) == "partner.eu_1"
    assert verify_key(tiny_settings, mobile + "x") is None
    assert verify_key(tiny_settings, "") is None
    assert [k.name for k in list_keys(tiny_settings)] == ["mobile", "partner.eu_1"]
    assert list_keys(tiny_settings)[0].created.endswith("+00:00")

    revoke_key(tiny_settings, "mobile")

    assert verify_key(tiny_settings, mobile) is None
    assert verify_key(tiny_settings, partner) == "partner.eu_1"
    assert [k.name for k in list_keys(tiny_settings)] == ["partner.eu_1"]


def test_revoking_every_key_keeps_the_api_closed(tiny_settings: Settings) -> None:
    key = create_key(tiny_settings, "only")
    revoke_key(tiny_settings, "only")

    assert keys_enabled(tiny_settings)
    assert verify_key(tiny_settings, key) is None


def test_only_the_hash_is_on_disk(tiny_settings: Settings) -> None:
    key = create_key(tiny_settings, "mobile")

    stored = keys_file(tiny_settings).read_text()

    assert key not in stored
    assert key[4:] not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert json.loads(stored)["keys"][0].keys() == {"name", "sha256", "created"}
    assert os.stat(keys_file(tiny_settings)).st_mode & 0o777 == 0o600


def test_a_duplicate_name_is_refused(tiny_settings: Settings) -> None:
    create_key(tiny_settings, "mobile")

    with pytest.raises(InputError, match="a key named 'mobile' already exists"):
        create_key(tiny_settings, "mobile")
    assert len(list_keys(tiny_settings)) == 1


def test_an_unknown_name_cannot_be_revoked(tiny_settings: Settings) -> None:
    create_key(tiny_settings, "mobile")

    with pytest.raises(InputError, match=r"no key named 'web'; `rag keys list` shows the keys"):
        revoke_key(tiny_settings, "web")


@pytest.mark.parametrize("name", ["", "-dash", "with space", "x" * 65, "slash/name"])
def test_a_bad_name_is_refused(tiny_settings: Settings, name: str) -> None:
    with pytest.raises(InputError, match="a key name is 1 to 64 letters"):
        create_key(tiny_settings, name)
    assert not keys_enabled(tiny_settings)


def test_a_damaged_keys_file_fails_closed(tiny_settings: Settings) -> None:
    key = create_key(tiny_settings, "mobile")
    keys_file(tiny_settings).write_text("{not json")

    with pytest.raises(RagError, match=r"keys\.json is unreadable"):
        verify_key(tiny_settings, key)


def test_a_key_file_changed_by_another_process_is_read_again(tiny_settings: Settings) -> None:
    key = create_key(tiny_settings, "mobile")
    assert verify_key(tiny_settings, key) == "mobile"  # now cached
    stored = json.loads(keys_file(tiny_settings).read_text())
    stored["keys"][0]["name"] = "renamed"
    keys_file(tiny_settings).write_text(json.dumps(stored))

    assert verify_key(tiny_settings, key) == "renamed"


def test_cli_creates_lists_and_revokes_keys(tiny_settings: Settings) -> None:
    runner = CliRunner()
    data = ["--data", str(tiny_settings.data_dir)]

    created = runner.invoke(cli, ["keys", "create", "mobile", *data])
    listed = runner.invoke(cli, ["keys", "list", *data])
    duplicate = runner.invoke(cli, ["keys", "create", "mobile", *data])
    revoked = runner.invoke(cli, ["keys", "revoke", "mobile", *data])
    unknown = runner.invoke(cli, ["keys", "revoke", "mobile", *data])

    assert created.exit_code == 0, created.output
    key = created.output.splitlines()[0]
    assert verify_key(tiny_settings, key) is None  # revoked since
    assert "won't be shown again" in created.output
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[1].split()[0] == "mobile"
    assert key not in listed.output
    assert duplicate.exit_code == 1
    assert "Error: a key named 'mobile' already exists" in duplicate.output
    assert revoked.exit_code == 0, revoked.output
    assert "revoked mobile" in revoked.output
    assert "no keys left" in revoked.output
    assert unknown.exit_code == 1
    assert "Error: no key named 'mobile'" in unknown.output
