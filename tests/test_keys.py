"""API keys: create, list, revoke and verify, with only hashes stored.

The behaviour tests run over both stores: ``data/keys.json`` and PostgreSQL (``RAG_DATABASE_URL``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator

import psycopg
import pytest
from click.testing import CliRunner
from conftest import file_or_database

from rag.cli import cli
from rag.dbpool import close_pool
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


@pytest.fixture(params=["file", "postgresql"])
def store(request: pytest.FixtureRequest, tiny_settings: Settings) -> Iterator[Settings]:
    """``tiny_settings`` with keys in ``data/keys.json``, or in a fresh PostgreSQL database."""
    yield from file_or_database(request, tiny_settings, keys_file(tiny_settings))


def test_keys_are_off_until_the_first_is_created(store: Settings) -> None:
    assert not keys_enabled(store)
    assert list_keys(store) == []
    assert verify_key(store, "rag_anything") is None

    create_key(store, "mobile")

    assert keys_enabled(store)


def test_create_verify_list_and_revoke(store: Settings) -> None:
    mobile = create_key(store, "mobile")
    partner = create_key(store, "partner.eu_1")

    assert mobile.startswith("rag_") and len(mobile) == 4 + 43
    assert mobile != partner
    assert verify_key(store, mobile) == "mobile"
    assert verify_key(store, partner) == "partner.eu_1"
    assert verify_key(store, mobile + "x") is None
    assert verify_key(store, "") is None
    assert [k.name for k in list_keys(store)] == ["mobile", "partner.eu_1"]
    assert list_keys(store)[0].created.endswith("+00:00")

    revoke_key(store, "mobile")

    assert verify_key(store, mobile) is None
    assert verify_key(store, partner) == "partner.eu_1"
    assert [k.name for k in list_keys(store)] == ["partner.eu_1"]


def test_revoking_every_key_keeps_the_api_closed(store: Settings) -> None:
    key = create_key(store, "only")
    revoke_key(store, "only")

    assert keys_enabled(store)
    assert verify_key(store, key) is None


def test_only_the_hash_is_on_disk(tiny_settings: Settings) -> None:
    key = create_key(tiny_settings, "mobile")

    stored = keys_file(tiny_settings).read_text()

    assert key not in stored
    assert key[4:] not in stored
    assert hashlib.sha256(key.encode()).hexdigest() in stored
    assert json.loads(stored)["keys"][0].keys() == {"name", "sha256", "created"}
    assert os.stat(keys_file(tiny_settings)).st_mode & 0o777 == 0o600


def test_a_duplicate_name_is_refused(store: Settings) -> None:
    create_key(store, "mobile")

    with pytest.raises(InputError, match="a key named 'mobile' already exists"):
        create_key(store, "mobile")
    assert len(list_keys(store)) == 1


def test_an_unknown_name_cannot_be_revoked(store: Settings) -> None:
    create_key(store, "mobile")

    with pytest.raises(InputError, match=r"no key named 'web'; `rag keys list` shows the keys"):
        revoke_key(store, "web")


@pytest.mark.parametrize("name", ["", "-dash", "with space", "x" * 65, "slash/name"])
def test_a_bad_name_is_refused(store: Settings, name: str) -> None:
    with pytest.raises(InputError, match="a key name is 1 to 64 letters"):
        create_key(store, name)
    assert not keys_enabled(store)


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


def test_cli_creates_lists_and_revokes_keys(store: Settings) -> None:
    runner = CliRunner(env={"RAG_DATABASE_URL": store.database_url or None})
    data = ["--data", str(store.data_dir)]

    created = runner.invoke(cli, ["keys", "create", "mobile", *data])
    listed = runner.invoke(cli, ["keys", "list", *data])
    duplicate = runner.invoke(cli, ["keys", "create", "mobile", *data])
    revoked = runner.invoke(cli, ["keys", "revoke", "mobile", *data])
    unknown = runner.invoke(cli, ["keys", "revoke", "mobile", *data])

    assert created.exit_code == 0, created.output
    key = created.output.splitlines()[0]
    assert verify_key(store, key) is None  # revoked since
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

    assert ("DELETE FROM api_key" in revoked.output) is bool(store.database_url)


def test_only_the_hash_is_in_the_database(tiny_settings: Settings, database_url: str) -> None:
    settings = tiny_settings.with_(database_url=database_url)
    key = create_key(settings, "mobile")

    with psycopg.connect(database_url) as db:
        rows = db.execute("SELECT * FROM api_key").fetchall()

    assert key not in repr(rows) and key[4:] not in repr(rows)
    assert [row[1:3] for row in rows] == [("mobile", hashlib.sha256(key.encode()).hexdigest())]
    close_pool(database_url)


def test_a_key_revoked_elsewhere_is_refused_within_a_second(
    tiny_settings: Settings, database_url: str
) -> None:
    settings = tiny_settings.with_(database_url=database_url)
    key = create_key(settings, "mobile")
    assert verify_key(settings, key) == "mobile"  # now cached by this replica
    with psycopg.connect(database_url) as other_replica:  # another machine's `rag keys revoke`
        other_replica.execute("UPDATE api_key SET revoked = 'now' WHERE name = 'mobile'")

    time.sleep(1.0)

    assert verify_key(settings, key) is None
    assert keys_enabled(settings)
    close_pool(database_url)
