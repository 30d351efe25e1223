"""Drive a real program on a pseudo-terminal, as a person at a keyboard would (tests only)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

ANSI = re.compile(rb"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")


class Terminal:
    def __init__(self, argv: list[str], env: dict[str, str], cols: int = 100, rows: int = 30,
                 cursor_reports: bool = False) -> None:
        # cursor_reports: answer "where is the cursor?" (ESC [6n) as a real terminal does, so
        # prompt-toolkit knows the screen's height and draws its bottom toolbar
        self.cursor_reports = cursor_reports
        pid, fd = pty.fork()
        if pid == 0:  # the child: become the program
            try:
                # As a login session starts it: signals at their defaults and none blocked. A
                # test run started in the background by a script without job control inherits
                # SIGINT ignored, and Ctrl-C on this terminal would then never reach the program.
                for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGTSTP, signal.SIGHUP):
                    signal.signal(signum, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid, self.fd = pid, fd
        self.cols, self.rows = cols, rows
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.raw = b""
        self.status: int | None = None

    def text(self) -> str:
        """Everything shown so far, without terminal control sequences."""
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def shown(self) -> list[str]:
        """What a person scrolling back would see: every line that scrolled off the top, then the
        screen, as a real terminal of this size draws what was written (``shown_on``)."""
        return shown_on(self.raw, self.cols, self.rows)

    def _pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                chunk = b""
            self.raw += chunk
            if self.cursor_reports and b"\x1b[6n" in chunk:
                self.send("\x1b[1;1R")

    def expect(self, pattern: str, timeout: float = 120, after: int = 0) -> int:
        """Wait until ``pattern`` (a regex) shows up after text offset ``after``; return the offset
        just past the match."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while True:
            match = regex.search(self.text(), after)
            if match:
                return match.end()
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {pattern!r}; screen:\n{self.text()[-3000:]}")
            self._pump(0.05)

    def until(self, condition, timeout: float = 120, what: str = "a condition") -> None:
        """Keep the screen flowing until ``condition()`` holds."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; screen:\n{self.text()[-3000:]}")
            self._pump(0.05)

    def cooked(self) -> bool:
        """Whether the program has left raw input mode (a prompt is no longer reading keys)."""
        return bool(termios.tcgetattr(self.fd)[3] & termios.ICANON)

    def echoing(self) -> bool:
        """Whether the terminal echoes typed keys (on Linux the master reads the slave's flags):
        a password prompt has switched it off, and flushed what was typed before, once this is
        False."""
        return bool(termios.tcgetattr(self.fd)[3] & termios.ECHO)

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def wait(self, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._pump(0.05)
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
        self.kill()
        raise AssertionError(f"the program did not exit; screen:\n{self.text()[-3000:]}")

    def kill(self) -> None:
        if self.fd < 0:
            return
        if self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
        os.close(self.fd)
        self.fd = -1


def shown_on(raw: bytes, cols: int, rows: int) -> list[str]:
    """The lines a ``cols`` x ``rows`` terminal shows after ``raw`` (pyte emulates it: cursor moves,
    erases and redraws act as on screen): its scrollback, oldest first, then the screen, each
    line without its trailing blanks."""
    import pyte

    screen = pyte.HistoryScreen(cols, rows, history=1_000_000, ratio=0.5)
    pyte.ByteStream(screen).feed(raw)

    def text(line) -> str:
        return "".join(line[x].data for x in range(cols)).rstrip()

    return [text(line) for line in screen.history.top] + [line.rstrip() for line in screen.display]
