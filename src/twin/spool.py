"""An append-only on-disk spool: where records wait, in order, while the broker is away."""

from __future__ import annotations

import os
from pathlib import Path

import orjson

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value)"""


class Spool:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - lives as long as the spool

    def append(self, records: list[Record]) -> None:
        """Durable once this returns: written and fsynced."""
        lines = b"".join(
            orjson.dumps([t, k.decode() if k is not None else None, v.decode()]) + b"\n"
            for t, k, v in records
        )
        self._file.write(lines)
        self._file.flush()
        os.fsync(self._file.fileno())

    def size(self) -> int:
        return self._file.tell()

    def read(self, offset: int, limit: int = 1000) -> tuple[list[Record], int]:
        """Up to ``limit`` records from byte ``offset``, and the offset after them."""
        records: list[Record] = []
        with open(self.path, "rb") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith(b"\n"):  # a torn last line: written by a crash, skip
                    break
                t, k, v = orjson.loads(line)
                records.append((t, k.encode() if k is not None else None, v.encode()))
                offset += len(line)
                if len(records) >= limit:
                    break
        return records, offset

    def clear(self) -> None:
        self._file.truncate(0)
        self._file.seek(0)

    def close(self) -> None:
        self._file.close()
