"""File system failures as one line naming the path and cause; the operator's data kept private."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient

from rag.cli import cli
from rag.embedding import Embedder
from rag.feedback import Feedback, record_feedback
from rag.index import build_index, builds_dir
from rag.settings import Settings
from web.app import create_app


def article(slug: str, topic: str) -> str:
    return (
        f"---\ntitle: {topic} careers\nurl: https://careers.example/{slug}/\n---\n\n"
        f"## Pay\n\n{topic} specialists in Porto earn about 51,000 euros a year.\n\n"
        f"## Skills\n\nA {topic} specialist writes tests and reviews designs every week.\n"
    )


@contextmanager
def small_file_system(path: Path, options: str) -> Iterator[Path]:
    """A real tmpfs at ``path`` (``size=…``, ``ro``): a disk that fills up or refuses writes."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> None:
    """Write until the file system is full."""
    descriptor = os.open(folder / "filler", os.O_CREAT | os.O_WRONLY, 0o600)
    try:
        while os.write(descriptor, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(descriptor)


def one_line(result: Result, *wanted: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    assert len(result.stderr.splitlines()) == 1, result.stderr
    for text in wanted:
        assert text in result.stderr, result.stderr


def test_a_full_disk_during_index_and_add_gets_one_line(tmp_path: Path, embedder: Embedder) -> None:
    # Room for one index with its question encoder (~90 MB), then filled.
    with small_file_system(tmp_path / "disk", "size=160m") as disk:
        settings = Settings(corpus_dir=disk / "corpus", index_dir=disk / "index")
        settings.corpus_dir.mkdir()
        (settings.corpus_dir / "base.md").write_text(article("base", "Testing"))
        build_index(settings, embedder)
        in_use = settings.index_dir.resolve()
        (tmp_path / "new.md").write_text(article("new", "Elixir"))
        fill(disk)
        options = ["--corpus", str(settings.corpus_dir), "--index", str(settings.index_dir)]

        indexed = CliRunner().invoke(cli, ["index", "--quiet", *options])
        added = CliRunner().invoke(cli, ["add", str(tmp_path / "new.md"), *options])

        one_line(indexed, "no space left on device; the index in use was not changed")
        one_line(added, "no space left on device; nothing was changed")
        assert settings.index_dir.resolve() == in_use
        assert [p.name for p in builds_dir(settings.index_dir).glob("build-*")] == [in_use.name]
        assert sorted(p.name for p in settings.corpus_dir.iterdir()) == ["base.md"]


def test_a_read_only_data_folder_for_keys_gets_one_line(tmp_path: Path) -> None:
    with small_file_system(tmp_path / "ro", "size=64k,ro") as read_only:
        result = CliRunner().invoke(
            cli, ["keys", "create", "ops", "--data", str(read_only / "data")]
        )

    one_line(result, f"{read_only / 'data'}: read-only file system; no key was changed")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_files_are_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")

    created = CliRunner().invoke(cli, ["keys", "create", "ops", "--data", str(settings.data_dir)])
    record_feedback(settings, Feedback("What do engineers earn?", "About 51,000.", ("p1",), True))

    assert created.exit_code == 0, created.output
    assert mode(settings.data_dir) == 0o700
    assert mode(settings.data_dir / "keys.json") == 0o600
    assert mode(settings.feedback_db) == 0o600
    for journal in settings.data_dir.glob("feedback.sqlite3-*"):  # WAL files, while open
        assert mode(journal) == 0o600, journal


def test_health_names_no_server_folder(tiny_settings: Settings) -> None:
    with TestClient(create_app(tiny_settings)) as client:
        health = client.get("/api/health")
        answer = client.post("/api/answer", json={"question": "What do engineers earn?"})

    assert health.status_code == 503
    assert health.json() == {
        "status": "unavailable",
        "reason": "no index at index; run `rag index` to build it",
    }
    assert answer.status_code == 503
    assert str(tiny_settings.index_dir.parent) not in answer.text
