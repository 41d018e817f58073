"""An append-only on-disk spool: where records wait, in order, while the broker is away."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import orjson

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)"""
Token = int | None
"""Marks a record whose first send may still land (see ``twin.capture``)."""


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: a write reaches the OS or fails here, nothing lingers in a buffer
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - lives as long as the spool

    def append(self, records: list[Record], tokens: list[Token] | None = None) -> None:
        """Durable once this returns: written and fsynced."""
        marks = tokens or [None] * len(records)
        lines = b"".join(
            orjson.dumps([t, k.decode() if k is not None else None, v.decode(), m]) + b"\n"
            for (t, k, v), m in zip(records, marks, strict=True)
        )
        before = self.size()
        try:
            view = memoryview(lines)
            while view:
                view = view[self._file.write(view) or 0 :]
            os.fsync(self._file.fileno())
        except OSError:  # a part written is taken back: no torn line for the next append to join
            with contextlib.suppress(OSError):
                self._file.truncate(before)
            raise

    def size(self) -> int:
        """The file's size on disk (not this file object's position, which another writer's
        truncation leaves where it was)."""
        return os.fstat(self._file.fileno()).st_size

    def read(self, offset: int, limit: int = 1000) -> tuple[list[tuple[Record, Token]], int]:
        """Up to ``limit`` records (with their tokens) from byte ``offset``, and the offset
        after them."""
        records: list[tuple[Record, Token]] = []
        with open(self.path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):  # a torn last line: written by a crash, skip
                    break
                t, k, v, m = orjson.loads(line)
                records.append(((t, k.encode() if k is not None else None, v.encode()), m))
                offset += len(line)
                if len(records) >= limit:
                    break
        return records, offset

    def clear(self) -> None:
        self._file.truncate(0)
        self._file.seek(0)

    def close(self) -> None:
        self._file.close()
