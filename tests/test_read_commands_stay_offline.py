"""verify, export, import, log, search, stats, sign, backup, restore (and init, remember, keygen)
open no network socket (SPEC 8).

Every command runs through pmm's own ``main``, all in one Python process (a process per command
costs ~0.65 s each) with a ``sitecustomize`` on ``PYTHONPATH`` that makes every socket creation,
connection helper and name lookup write a line to a log file and raise. The hook also writes a
marker line per process, so a run where it was not loaded fails the test, and a positive control
proves that it does catch a socket.
"""

from __future__ import annotations

import json
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


# One interpreter runs every command through pmm's own ``main`` (conftest's ``run_in``): the hook
# is loaded once, and a socket attempt is charged to the command during which the log grew.
RUNNER = textwrap.dedent('''
    import json, os, sys
    sys.path.insert(0, sys.argv[1])
    from conftest import run_in

    log = os.environ["PMM_TEST_SOCKET_LOG"]
    for line in sys.stdin:
        job = json.loads(line)
        before = os.path.getsize(log) if os.path.exists(log) else 0
        done = run_in(*job["args"], input=job["input"].encode("latin-1") if job["input"] else None)
        after = os.path.getsize(log) if os.path.exists(log) else 0
        print(json.dumps({"args": job["args"], "code": done.returncode, "stdout": done.stdout.decode("latin-1"),
                          "stderr": done.stderr.decode("utf-8", "replace"), "tried_network": after > before}),
              flush=True)
''')


def test_read_and_portability_commands_open_no_socket(offline_env: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
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
        ("--mind", str(tmp_path / "stdin.db"), "import", "-"),  # stdin import and verify, too
        ("verify", "-"),
        ("--mind", str(copy), "search", "sockets"),
    ]
    stdin = {len(commands) - 3, len(commands) - 2}  # the two that read the export from stdin
    script = tmp_path / "runner.py"
    script.write_text(RUNNER, encoding="utf-8")
    # one command at a time: the export that stdin carries exists only once the commands before it ran
    done = subprocess.Popen([sys.executable, str(script), str(Path(__file__).parent)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert done.stdin is not None and done.stdout is not None
    results = []
    for i, args in enumerate(commands):
        data = export.read_bytes().decode("latin-1") if i in stdin else ""
        done.stdin.write(json.dumps({"args": args, "input": data}) + "\n")
        done.stdin.flush()
        line = done.stdout.readline()
        assert line, f"the runner died at pmm {' '.join(args)}: {done.stderr.read()}"
        results.append(json.loads(line))
    done.stdin.close()
    assert done.wait(timeout=120) == 0, done.stderr.read()
    assert len(_lines(marker)) == 1, "the hook was not loaded by the process that ran the commands"
    for result in results:
        assert result["code"] == 0, f"pmm {' '.join(result['args'])}: {result['stderr']}"
        assert not result["tried_network"], f"pmm {' '.join(result['args'])} tried the network: {_lines(log)}"
    assert _lines(log) == []
    assert "sockets" in results[-1]["stdout"]
