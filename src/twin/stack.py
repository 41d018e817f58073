"""The processes of ``twin up``: each started in a session of its own, waited for until it
answers, watched while it runs, and stopped by its process id, the last started first.

Each process writes its output to ``LOGS/<name>.log``; when one stops unexpectedly the
stack says which, shows the end of its log, and stops the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A process of the stack did not start or stopped; the message says which and why."""


Probe = Callable[[], bool]


def tcp_probe(host: str, port: int) -> Probe:
    def probe() -> bool:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return True
        return False

    return probe


def http_probe(url: str) -> Probe:
    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status < 500)
        except urllib.error.HTTPError as exc:
            return exc.code < 500
        except (urllib.error.URLError, OSError):
            return False

    return probe


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    log: Path
    may_finish: bool = False
    """A process that may end on its own (a simulated fleet that has played all its days)."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def ended(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").rstrip().splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


@dataclass
class Stack:
    logs: Path
    env: dict[str, str] = field(default_factory=dict)
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], ready: Probe | None = None, timeout: float = 60.0,
              may_finish: bool = False) -> Service:  # fmt: skip
        """Start a process and wait until ``ready`` says it answers (or it ends: an error)."""
        self.logs.mkdir(parents=True, exist_ok=True)
        service = Service(name, list(argv), self.logs / f"{name}.log", may_finish)
        with open(service.log, "ab") as out:
            service.process = subprocess.Popen(
                service.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **self.env},
            )  # fmt: skip
        self.services.append(service)
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            code = service.ended()
            if code is not None:
                raise StackError(f"the {name} stopped as it started (exit {code}); its log:\n{service.tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"the {name} did not answer within {timeout:g} s; its log:\n{service.tail()}")
            time.sleep(0.2)
        return service

    def failed(self) -> Service | None:
        """A process that ended when it should not have."""
        for service in self.services:
            code = service.ended()
            if code is not None and not (service.may_finish and code == 0):
                return service
        return None

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to each process's group (its own session), the last started first; SIGKILL
        what is still there after ``grace`` seconds."""
        for service in reversed(self.services):
            process = service.process
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        for service in self.services:  # children a process left in its group
            if service.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service.process.pid, signal.SIGKILL)
