"""The Parquet archive: the frame log, hive-partitioned by capture date.

    ARCHIVE/date=YYYY-MM-DD/part-<id>.parquet

with the envelope's fields (``payload`` as JSON text, ``ts`` as ``timestamp[ms, UTC]``),
readable as it is by DuckDB, Polars, pyarrow and Spark. Each file is written whole or not at
all (written aside, then renamed into place); readers drop duplicate ``(conn_id, seq)``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Mapping
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA = pa.schema([
    ("station_id", pa.string()), ("origin", pa.string()), ("msg_type", pa.int8()), ("msg_id", pa.string()),
    ("action", pa.string()), ("payload", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
    ("protocol", pa.string()), ("conn_id", pa.string()), ("seq", pa.int64()), ("valid", pa.bool_()),
    ("error", pa.string()),
])  # fmt: skip


def table(records: list[Mapping[str, Any]]) -> pa.Table:
    """Envelopes as an Arrow table of the archive's schema."""
    dumps = orjson.dumps
    columns = {name: [r[name] for r in records] for name in SCHEMA.names if name not in ("payload", "ts")}
    columns["payload"] = [dumps(r["payload"]).decode() for r in records]
    ts = pa.array([r["ts"] for r in records], pa.string()).cast(SCHEMA.field("ts").type)
    arrays = [ts if name == "ts" else pa.array(columns[name], SCHEMA.field(name).type) for name in SCHEMA.names]
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def write(root: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Append envelopes to the archive, a file per run of records of one capture date (one
    per date for records in log order); returns how many. Order within a file is kept.
    ``root``: a directory, or an object-store URL pyarrow understands (``s3://bucket/path``,
    ``gs://...``, ``file:///...``)."""
    n = 0
    for date, group in groupby(records, key=lambda r: r["ts"][:10]):
        part = list(group)
        write_file(root, f"date={date}", table(part))
        n += len(part)
    return n


def write_file(root: str | Path, partition: str, data: pa.Table) -> str:
    """One file, under its final name only once it is whole: written aside and renamed on a
    local disk; on an object store, where an upload appears whole or not at all, directly."""
    name = f"part-{uuid.uuid4().hex}.parquet"
    text = str(root)
    if "://" in text and not text.startswith("file://"):
        from pyarrow import fs

        store, base = fs.FileSystem.from_uri(text)
        final = f"{base.rstrip('/')}/{partition}/{name}"
        store.create_dir(f"{base.rstrip('/')}/{partition}", recursive=True)
        pq.write_table(data, final, filesystem=store, compression="zstd")
        return final
    directory = Path(text.removeprefix("file://")) / partition
    directory.mkdir(parents=True, exist_ok=True)
    aside = directory / f".{name}.tmp"
    pq.write_table(data, aside, compression="zstd")
    os.replace(aside, directory / name)
    return str(directory / name)
