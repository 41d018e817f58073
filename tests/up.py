"""``twin up`` as a user runs it: a real process tree on free ports, stopped with Ctrl-C
(SIGINT to its own pid)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from twin import runtime
from twin.broker import free_port

TWIN = [sys.executable, "-m", "twin"]


@dataclass
class Up:
    process: subprocess.Popen[bytes]
    urls: dict[str, Any]
    stderr: Path

    @property
    def api(self) -> str:
        return self.urls["api"].removesuffix("/stations")

    @property
    def token(self) -> str:
        """The admin token twin up made (a fresh data directory: it has no store yet)."""
        return str(self.urls["api_token"])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def twin_up(tmp: Path, *args: str, timeout: float = 180) -> Iterator[Up]:
    """``twin up --json ARGS`` on free ports with its data in ``tmp``; yields once it has
    printed its URLs; afterwards stops it as Ctrl-C does and checks nothing is left."""
    ports = [free_port() for _ in range(4)]
    argv = [*TWIN, "up", "--json", "--data-dir", str(tmp / "twin-data"), "--archive", str(tmp / "archive"),
            "--broker-port", str(ports[0]), "--port", str(ports[1]), "--web-port", str(ports[2]),
            "--dashboard-port", str(ports[3]), *args]  # fmt: skip
    stderr = tmp / "up.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, cwd=tmp)
    try:
        text = b""
        deadline = time.monotonic() + timeout
        urls = None
        assert proc.stdout is not None
        while urls is None:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"twin up ended (exit {proc.wait()}): {stderr.read_text()[-3000:]}")
            text += line
            with contextlib.suppress(orjson.JSONDecodeError):
                urls = orjson.loads(text)
            assert time.monotonic() < deadline, "twin up printed no URLs in time"
        yield Up(proc, urls, stderr)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, stderr.read_text()[-3000:]
        left = [name for name, pid in urls["pids"].items() if alive(pid)]
        assert not left, f"processes left behind: {left}"
    finally:
        runtime.stop(proc, signal.SIGINT, 60)
