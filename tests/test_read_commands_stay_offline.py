"""verify, export, import, log, search, stats, sign, backup, restore (and init, remember, keygen)
open no network socket (SPEC 8).

Each command runs as a real `pmm` process with a ``sitecustomize`` on ``PYTHONPATH`` that makes
every socket creation, connection helper and name lookup write a line to a log file and raise.
The hook also writes a marker line per process, so a run where it was not loaded fails the test,
and a positive control proves that it does catch a socket.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SITECUSTOMIZE = textwrap.dedent('''
    """Test hook: record and refuse any network access by this process."""
    import os
    import socket
    import sys

    _LOG = os.environ["PMM_TEST_SOCKET_LOG"]

    def _record(what):
        with open(_LOG, "a", encoding="utf-8") as log:
            log.write(f"{what} pid={os.getpid()} argv={sys.argv[1:]!r}\\n")

    with open(os.environ["PMM_TEST_HOOK_MARKER"], "a", encoding="utf-8") as marker:
        marker.write(f"loaded pid={os.getpid()} argv={sys.argv[1:]!r}\\n")

    def _refuse(name):
        def refused(*args, **kwargs):
            _record(f"{name}{args!r}")
            raise OSError(f"network access refused by the offline test ({name})")
        return refused

    _init = socket.socket.__init__

    def _guarded_init(self, family=-1, type=-1, proto=-1, fileno=None):
        if family == socket.AF_UNIX:  # local IPC (socketpair) is not the network
            return _init(self, family, type, proto, fileno)
        _record(f"socket.socket(family={family!r}, type={type!r})")
        raise OSError("network access refused by the offline test (socket.socket)")

    socket.socket.__init__ = _guarded_init
    for _name in ("create_connection", "create_server", "getaddrinfo", "gethostbyname",
                  "gethostbyname_ex", "gethostbyaddr", "fromfd"):
        setattr(socket, _name, _refuse(f"socket.{_name}"))
''')


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SITECUSTOMIZE, encoding="utf-8")
    log, marker = tmp_path / "sockets.log", tmp_path / "hook-loaded.log"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(hook), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("PMM_TEST_SOCKET_LOG", str(log))
    monkeypatch.setenv("PMM_TEST_HOOK_MARKER", str(marker))
    # a configured proxy or provider must not matter: these commands never talk to one
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-offline-test")
    return log, marker


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def test_the_hook_catches_a_socket(offline_env: tuple[Path, Path]) -> None:
    """Positive control: the same environment stops and records a plain Python socket."""
    log, marker = offline_env
    code = textwrap.dedent("""
        import socket
        socket.socketpair()  # local IPC stays allowed
        for attempt in (lambda: socket.create_connection(("127.0.0.1", 9), timeout=1),
                        lambda: socket.socket(), lambda: socket.socket(socket.AF_INET6)):
            try:
                attempt()
            except OSError as exc:
                print(exc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused by the offline test" in done.stdout, done.stdout + done.stderr
    assert len(_lines(marker)) == 1
    assert any("create_connection" in line for line in _lines(log))
    assert sum("socket.socket(" in line for line in _lines(log)) == 2
    assert done.stdout.count("refused by the offline test") == 3


def test_read_and_portability_commands_open_no_socket(offline_env: tuple[Path, Path],
                                                      tmp_path: Path, pmm) -> None:
    log, marker = offline_env
    mind, copy, appended = tmp_path / "mind.db", tmp_path / "copy.db", tmp_path / "appended.db"
    export, since = tmp_path / "mind.jsonl", tmp_path / "since.jsonl"
    words = tmp_path / "passphrase.txt"
    words.write_text("offline passphrase\n")
    commands: list[tuple[str, ...]] = [
        ("--mind", str(mind), "init", "--name", "Offline"),
        ("--mind", str(mind), "remember", "a note about sockets"),
        ("--mind", str(appended), "remember", "first-use creation"),
        ("--mind", str(mind), "remember", "another note"),
        ("verify", str(mind)),
        ("verify", "--deep", str(mind)),
        ("--mind", str(mind), "export", "-o", str(export)),
        ("--mind", str(mind), "export", "--format", "md"),
        ("--mind", str(mind), "export", "--since", "2", "-o", str(since)),
        ("verify", str(export)),
        ("--mind", str(copy), "import", str(export)),
        ("--mind", str(copy), "import", str(export)),
        ("--mind", str(mind), "log"),
        ("--mind", str(mind), "log", "--json", "-n", "2"),
        ("--mind", str(mind), "search", "sockets"),
        ("--mind", str(mind), "stats"),
        ("--mind", str(mind), "stats", "--json"),
        ("keygen", "-o", str(tmp_path / "k.pem")),
        ("sign", str(mind), "--key", str(tmp_path / "k.pem"), "-o", str(tmp_path / "m.sig")),
        ("sign", str(mind), "--key", str(tmp_path / "k.pem"), "--format", "ssh"),
        ("verify", str(mind), "--sig", str(tmp_path / "m.sig"), "--pub", str(tmp_path / "k.pub.pem")),
        ("--mind", str(mind), "backup", "-o", str(tmp_path / "m.age"), "--passphrase-file", str(words)),
        ("--mind", str(tmp_path / "restored.db"), "restore", str(tmp_path / "m.age"),
         "--passphrase-file", str(words)),
    ]
    for args in commands:
        before = len(_lines(marker))
        done = pmm(*args)
        assert done.returncode == 0, f"pmm {' '.join(args)}: {done.stderr.decode()}"
        assert len(_lines(marker)) == before + 1, f"the hook was not loaded for pmm {args}"
        assert _lines(log) == [], f"pmm {' '.join(args)} tried the network: {_lines(log)}"
    # stdin import and verify, too
    data = export.read_bytes()
    assert pmm("--mind", str(tmp_path / "stdin.db"), "import", "-", input=data).returncode == 0
    assert pmm("verify", "-", input=data).returncode == 0
    assert len(_lines(marker)) == len(commands) + 2
    assert _lines(log) == []
    assert b"sockets" in pmm("--mind", str(copy), "search", "sockets", check=True).stdout
