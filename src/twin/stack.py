"""The processes of ``twin up``: each started in a session of its own, waited for until it
answers, watched while it runs, and stopped by its process id: all at once, the broker last.

Each process writes its output to ``LOGS/<name>.log``; when one stops unexpectedly the
stack says which, shows the end of its log, and stops the others.

Each dies with ``twin up`` however ``twin up`` dies: on Linux every process is started with a
parent-death signal (SIGTERM, see :func:`die_with_parent`), so a ``twin up`` killed with
SIGKILL, which runs no code of its own, still stops its broker, gateway, worker and dashboard;
``twin broker`` starts its broker (Kafka's JVM, Tansu) the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class StackError(RuntimeError):
    """A process of the stack did not start or stopped; the message says which and why."""


_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets ``sig`` when the thread that
    started it ends, its process killed with SIGKILL included (Linux's ``PR_SET_PDEATHSIG``;
    None elsewhere, where there is no such thing). Start such children from the main thread:
    the signal follows the starting thread, not its process. A parent that died between the
    fork and the ``prctl`` is noticed too: the child signals itself."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here, not in the forked child
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


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
    last: bool = False
    """Stopped after the others (the broker: the gateway flushes to it, the worker commits)."""
    process: subprocess.Popen[bytes] | None = None
    stopped_in: float | None = None
    """Seconds from the stop signal to the process's end (set by :meth:`Stack.stop`)."""

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
    interrupted: threading.Event = field(default_factory=threading.Event)
    """Set (by a signal handler) to give up waiting for a process to answer: :meth:`start`
    raises StackError at once instead of waiting out its timeout."""

    def start(self, name: str, argv: Sequence[str], ready: Probe | None = None, timeout: float = 60.0,
              may_finish: bool = False, last: bool = False) -> Service:  # fmt: skip
        """Start a process and wait until ``ready`` says it answers (or it ends: an error). It
        gets SIGTERM if this process dies (:func:`die_with_parent`): call from the main thread."""
        self.logs.mkdir(parents=True, exist_ok=True)
        service = Service(name, list(argv), self.logs / f"{name}.log", may_finish, last)
        with open(service.log, "ab") as out:
            service.process = subprocess.Popen(
                service.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **self.env}, preexec_fn=die_with_parent(),
            )  # fmt: skip
        self.services.append(service)
        deadline = time.monotonic() + timeout
        while ready is not None and not ready():
            code = service.ended()
            if code is not None:
                raise StackError(f"the {name} stopped as it started (exit {code}); its log:\n{service.tail()}")
            if self.interrupted.is_set():
                raise StackError(f"stopped while the {name} was starting")
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

    def stop(self, grace: float = 5.0, broker_grace: float = 3.0) -> None:
        """SIGTERM to every process's group (each its own session) at once, but the broker's;
        SIGKILL to what is still there after ``grace`` seconds; then the broker the same way,
        within ``broker_grace``. Stopped one after another, the processes took the sum of
        their stops (7 s, over a container's 10 s grace on a busy machine); together they take
        the longest (the worker's Faust about 1 s) plus the broker's."""
        first = [s for s in self.services if not s.last]
        _stop_together(first, grace)
        _stop_together([s for s in self.services if s.last], broker_grace)
        for service in self.services:  # children a process left in its group
            if service.process is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service.process.pid, signal.SIGKILL)


def _stop_together(services: list[Service], grace: float) -> None:
    began = time.monotonic()
    waiting = [(s, s.process) for s in reversed(services) if s.process is not None and s.process.poll() is None]
    for _, process in waiting:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    while waiting:
        if time.monotonic() > began + grace:
            for _, process in waiting:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
        for service, process in list(waiting):
            if process.poll() is not None or time.monotonic() > began + grace:
                process.wait(5)
                service.stopped_in = time.monotonic() - began
                waiting.remove((service, process))
        if waiting:
            time.sleep(0.05)
