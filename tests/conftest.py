"""Shared fixtures: every test gets private data/config/state dirs and a way to run real `pmm`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PMM = str(Path(sys.executable).with_name("pmm"))


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"),
                     ("XDG_STATE_HOME", "state"), ("XDG_CACHE_HOME", "cache")):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("PMM_MIND", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "100")
    # Semantic recall loads WordLlama (~0.5 s) in every process that recalls: off unless a test
    # module is about it (those set PMM_SEMANTIC=1 themselves).
    monkeypatch.setenv("PMM_SEMANTIC", "0")
    # Each test starts as a fresh process would: no plain-path cost spent yet (past
    # semantic.PLAIN_PROCESS_US a process recalls through numpy from then on).
    if (semantic := sys.modules.get("pmm.services.semantic")) is not None:
        monkeypatch.setattr(semantic, "_plain_spent", [0], raising=False)
    # A backup's scrypt at the default 2^18 costs about a second idle and tens of seconds on a
    # busy machine, twice per backup test; the format is the same at any factor
    # (tests/test_backups_open_anywhere.py checks the default and the limits).
    monkeypatch.setenv("PMM_BACKUP_WORK_FACTOR", "10")
    # llama.cpp's threads wait for each other by spinning: on two cores shared by two test
    # workers, one thread per model answers many times faster than two.
    monkeypatch.setenv("PMM_LOCAL_THREADS", "1")
    return home


def in_zone(monkeypatch: pytest.MonkeyPatch, zone: str):
    """A generator fixture's body: this process in time zone ``zone`` (``TZ``, then tzset), and
    back after. People are shown local time, so a zone that is not UTC tells the two apart."""
    import time

    monkeypatch.setenv("TZ", zone)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def run_pmm(*args: str, input: bytes | str | None = None, check: bool = False,
            env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """Run the installed `pmm` console script as a user would."""
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.run([PMM, *args], input=input, capture_output=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"pmm {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


@pytest.fixture
def pmm():
    return run_pmm


@pytest.fixture
def mind(tmp_path: Path) -> Path:
    """A fresh mind file with a genesis event, made by `pmm init`."""
    path = tmp_path / "mind.db"
    run_in("--mind", str(path), "init", "--name", "Test", check=True)  # in-process: ~10x cheaper
    return path


def mind_events(mind: Path, kind: str | None = None, since: int = 1) -> list[dict]:
    """The mind's events read straight from the file with plain sqlite3 (read-only), meta parsed:
    what is really stored, whatever pmm says about it."""
    import json
    import sqlite3

    conn = sqlite3.connect(f"file:{mind}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, kind, content, meta FROM events WHERE id >= ? ORDER BY id",
                            (since,)).fetchall()
    finally:
        conn.close()
    found = [{"id": r[0], "kind": r[1], "content": r[2], "meta": json.loads(r[3])} for r in rows]
    return [e for e in found if kind is None or e["kind"] == kind]


def unguarded(mind: Path):
    """A plain sqlite3 connection to ``mind`` with its guard triggers dropped: how an attacker
    (or a test) rewrites history behind pmm's back. The caller closes it."""
    import sqlite3

    conn = sqlite3.connect(mind, isolation_level=None)
    for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    return conn


def restore_guards(conn) -> None:  # noqa: ANN001 (a sqlite3 connection)
    """Put back what ``unguarded`` dropped: an attacker covering their tracks, since pmm refuses
    to write to (and verify fails) a file whose schema is not the one pmm made."""
    from pmm.ledger import schema

    for statement in schema.GUARDS:
        conn.execute(statement)


def mind_kinds(mind: Path) -> list[str]:
    return [e["kind"] for e in mind_events(mind)]


ENVELOPE = {"ok", "command", "data", "error"}
ERROR = {"code", "type", "message", "hint"}


def json_document(text: str | bytes) -> dict:
    """The whole ``--json`` document on stdout: exactly docs/json.md's envelope."""
    import json

    document = json.loads(text)
    assert isinstance(document, dict) and set(document) == ENVELOPE, f"not the --json envelope: {document!r:.300}"
    assert isinstance(document["ok"], bool) and isinstance(document["command"], str), document
    assert document["command"] and not document["command"].startswith("pmm"), document["command"]
    return document


def json_data(text: str | bytes):
    """The ``data`` of a successful ``--json`` document on stdout (docs/json.md's envelope); every
    test reads JSON output through this, so the envelope is checked in one place."""
    document = json_document(text)
    assert document["ok"] is True and document["error"] is None, f"a --json error: {document['error']}"
    return document["data"]


def json_failure(text: str | bytes, code: int | None = None) -> dict:
    """A ``--json`` error document (``ok`` false): the envelope, its ``error`` checked (and its
    ``code`` when given); ``data`` is what the command did before failing, or null."""
    document = json_document(text)
    error = document["error"]
    assert document["ok"] is False and isinstance(error, dict) and set(error) == ERROR, document
    assert isinstance(error["code"], int) and error["code"] > 0 and isinstance(error["message"], str), error
    assert code is None or error["code"] == code, (code, error)
    return document


def pmm_json(mind: Path, *args: str, **kw):
    """Run `pmm --mind MIND ARGS --json`, require exit 0, return the parsed stdout's data."""
    result = run_pmm("--mind", str(mind), *args, "--json", **kw)
    assert result.returncode == 0, result.stderr.decode()
    return json_data(result.stdout)


class _Entry:
    """What CliRunner invokes: pmm's own ``main``, so the error boundary (one ``Error:`` line,
    the exit code of SPEC section 5) is exercised in-process exactly as the console script runs it."""

    name = "pmm"

    def main(self, args: list[str], prog_name: str | None = None, **_: object) -> None:
        from pmm.cli.boundary import main

        main(list(args))


def invoke(*args: str, input: bytes | str | None = None, env: dict[str, str | None] | None = None,
           cwd: Path | None = None):
    """Run ``pmm ARGS`` in this process (about 10x faster than a subprocess): for output and
    validation tests. Keep subprocesses (``run_pmm``) for exit codes at the process boundary,
    signals, start-up, terminals and concurrency. ``env`` is laid over the environment for the
    call (None unsets a variable), ``cwd`` is the working directory during it. Returns click's
    ``Result``: ``exit_code``, ``stdout``, ``stderr``, ``output`` (and ``*_bytes``)."""
    from click.testing import CliRunner  # typer's runner insists on a Typer app; this is its base

    from pmm.cli import options, output
    from pmm.ledger import folded, seal

    # What a fresh process starts with: the globals pmm's root callback sets (it does not run
    # for an eager ``--version``), the umask that ``main`` narrows for everything it makes, and
    # no cached cache-seal key (a real process made between two calls may have written one).
    options.Globals.mind, output.QUIET = None, False
    seal._cached_key.cache_clear()
    folded.forget()  # the states an earlier call folded
    umask = os.umask(0o022)
    os.umask(umask)
    # No chdir unless asked: the caller may not be allowed back into its own working directory
    # (a test running as nobody inside a private checkout).
    here = Path.cwd() if cwd is not None else None
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(_Entry(), list(args), input=input, env=env,  # type: ignore[arg-type]
                                  catch_exceptions=False)
    finally:
        if here is not None:
            os.chdir(here)
        os.umask(umask)


def run_in(*args: str, input: bytes | str | None = None, check: bool = False,
           env: dict[str, str | None] | None = None,
           cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    """``run_pmm``'s in-process twin: the same arguments and the same result (exit code, stdout
    and stderr bytes), so a test converted from a subprocess keeps every assertion it made.
    What it cannot show is what only a process has: its own stdin/stdout descriptors (a closed
    pipe, a tty), signals, start-up, and a fresh interpreter's imports."""
    result = invoke(*args, input=input, env=env, cwd=cwd)
    proc = subprocess.CompletedProcess(["pmm", *args], result.exit_code, result.stdout_bytes,
                                       result.stderr_bytes)
    if check and proc.returncode != 0:
        raise AssertionError(f"pmm {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()}")
    return proc


def cli_json(mind: Path, *args: str, **kw):
    """``pmm_json`` in this process: `pmm --mind MIND ARGS --json`, exit 0, the parsed stdout's data."""
    result = run_in("--mind", str(mind), *args, "--json", **kw)
    assert result.returncode == 0, result.stderr.decode()
    return json_data(result.stdout)


@pytest.fixture
def cli():
    return invoke
