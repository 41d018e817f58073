"""Rebuilding twins from a capture, its stations shared among processes.

A station's twin is the fold of its own records alone, so a capture folds in parts: each
process reads the whole file but decodes only the lines of its part's stations
(:class:`twin.captures.Parts`: the busiest of the file's first lines shared out evenly; a
line's station id is read from its head, not decoded),
drops their duplicates and folds them with the one fold; the parts' twins are joined. Each
twin is the one a single process folds, record for record: the same function over the same
records in the same order. Reading a line that another part decodes costs a tenth of
decoding it, so ``n`` processes on ``n`` free cores take a little over ``1/n`` of the time.

Small captures and archives (whose reader is one DuckDB query) fold in the calling process.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
from collections.abc import Callable, Collection, Iterable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from twin import captures, fold
from twin.fold.engine import Record, Twin

PARALLEL_BYTES = 64 << 20
"""A ``.jsonl`` capture this large or larger folds in several processes by default."""


def processes_for(path: str | Path, asked: int | None = None) -> int:
    """How many processes fold ``path``: one for an archive (one DuckDB query reads it);
    for a ``.jsonl``, ``asked`` if given, else one per core this process may use (at most 8)
    when it has :data:`PARALLEL_BYTES` or more, else one. Raises
    :class:`twin.captures.CaptureError` where there is no capture."""
    p = captures.local(path)
    if p.is_dir():
        return 1
    if asked is not None:
        return max(1, asked)
    if p.stat().st_size < PARALLEL_BYTES:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0))))


def fold_capture(
    path: str | Path,
    *,
    until: str | None = None,
    stations: Collection[str] | None = None,
    processes: int = 1,
    progress: Callable[[int], None] = lambda n: None,
) -> tuple[dict[str, Twin], int]:
    """The twins of a capture (records captured up to ``until``; of ``stations`` only, if
    given) and how many records were folded, in ``processes`` processes. ``progress`` is
    called now and then with the records folded so far; the parts are forked first, so a
    caller that draws progress should do so without a thread of its own. The cyclic
    collector is off meanwhile: the twins hold no cycles, and its young collections, one
    every few hundred of the decoder's dicts, took a sixth of a rebuild. Raises
    :class:`twin.captures.CaptureError`."""
    if processes <= 1:
        return fold_records(captures.read(path, until=until, stations=stations), progress)
    return _fold_in_parts(path, until, stations, processes, progress)


def fold_records(
    records: Iterable[Record], progress: Callable[[int], None] = lambda n: None
) -> tuple[dict[str, Twin], int]:
    """Records folded into twins, and how many there were; the cyclic collector off meanwhile."""
    read = [0]

    def counted(n: int) -> None:
        read[0] = n
        progress(n)

    collecting = gc.isenabled()
    gc.disable()
    try:
        return fold.fold(records, progress=counted), read[0]
    finally:
        if collecting:
            gc.enable()


def _fold_in_parts(
    path: str | Path, until: str | None, stations: Collection[str] | None, parts: int,
    progress: Callable[[int], None],
) -> tuple[dict[str, Twin], int]:  # fmt: skip
    shares = captures.Parts.of_capture(path, parts)  # worked out once, before the fork
    # fork: the parts start with the modules already imported, and before any thread of ours
    context = multiprocessing.get_context("fork")
    counts = context.Array("q", parts, lock=False)  # each part writes its own slot
    pipes: dict[Connection, int] = {}
    children = []
    try:
        for index in range(parts):
            receiver, sender = context.Pipe(duplex=False)
            ours = [*pipes, receiver]  # the parent's ends the child inherits: it closes them
            args = (path, until, stations, (index, shares), counts, sender, ours, os.getpid())
            child = context.Process(target=_part, args=args, name=f"twin-rebuild-{index}", daemon=True)
            child.start()
            sender.close()
            pipes[receiver] = index
            children.append(child)
        results: dict[int, tuple[dict[str, Twin], int]] = {}
        while pipes:
            for ready in wait(list(pipes), timeout=0.2):
                receiver = ready  # type: ignore[assignment]
                index = pipes.pop(receiver)
                try:
                    kind, *answer = receiver.recv()
                except EOFError:
                    children[index].join()
                    raise captures.CaptureError(
                        f"{captures.shown(path)}: the process folding part {index + 1} of {parts} died "
                        f"(exit code {children[index].exitcode})"
                    ) from None
                finally:
                    receiver.close()
                if kind == "error":
                    raise answer[0]
                results[index] = (answer[0], answer[1])
            progress(sum(counts))
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join()
        for receiver in pipes:
            receiver.close()
    twins: dict[str, Twin] = {}
    for index in range(parts):
        twins.update(results[index][0])
    return twins, sum(n for _, n in results.values())


def _part(path: str | Path, until: str | None, stations: Collection[str] | None, part: tuple[int, captures.Parts],
          counts: Any, sender: Connection, parents: list[Connection], parent: int) -> None:  # fmt: skip
    """One part's fold, in its own process: its twins and count, or the error, sent back.
    Ctrl-C is the parent's to answer: it stops the parts. A part ends with its parent, however
    the parent ends (killed, it cannot stop them): the kernel signals it (Linux), and its answer
    finds no reader."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent(parent)
    for end in parents:
        end.close()
    try:
        twins, n = fold_records(captures.read(path, until=until, stations=stations, part=part),
                                lambda n: counts.__setitem__(part[0], n))  # fmt: skip
        counts[part[0]] = n
        sender.send(("ok", twins, n))
    except Exception as exc:  # the parent raises it: a CaptureError names the line
        try:
            sender.send(("error", exc))
        except Exception:  # an error that does not pickle: its text
            sender.send(("error", captures.CaptureError(f"{type(exc).__name__}: {exc}")))
    finally:
        sender.close()


def _end_with_parent(parent: int) -> None:
    """SIGTERM to this process when its parent ends (``prctl(PR_SET_PDEATHSIG)``, Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it ended before that took hold
        os._exit(1)
