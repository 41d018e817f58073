"""The Parquet archive: the frame log, hive-partitioned by capture date.

    ARCHIVE/date=YYYY-MM-DD/part-<id>.parquet

with the envelope's fields (``payload`` as JSON text, ``ts`` as ``timestamp[ms, UTC]``),
readable as it is by DuckDB, Polars, pyarrow and Spark. Each file is written whole or not at
all (written aside, then renamed into place); readers drop duplicate ``(conn_id, seq)``.
``ARCHIVE`` is a directory or an object-store URL pyarrow understands (``s3://``, ``gs://``),
where an upload appears whole or not at all; twin's readers read a directory, so an archive
on a store is read from a copy (``aws s3 sync``: the layout is the same).

Within a file, rows are clustered by action, then station (log order within each), and
declared so (each row group's ``sorting_columns``). A row group holds one action, or several
small ones, and at most 131,072 rows: a reader asking for a few actions skips the other row
groups by their statistics, and one asking for a station skips most of each large action's.
At 10 M records uptime's three actions are 3% of the records; it runs in half the time, one
station's records are read in a third of the time, and the files are a fifth smaller.
Nothing reads order from a file: readers order by ``ts``, ``conn_id`` and ``seq``.

Each file's footer holds its writer's summary (``twin.summary``, JSON): its first and last
station and ``ts``, its derived columns (below), and whether each ``(conn_id, seq)`` is in it
once (``unique_keys``: the simulator makes each record once, and ``compact`` keeps each once;
the archive agent's batches may be delivered again). A record written again lands in its own
date, so when each date's files have unique keys and disjoint ranges of stations, no record
is in the archive twice, and readers skip the dedupe; ``twin compact`` makes any date one
such file. DuckDB reads these summaries in a few milliseconds, the row groups' statistics in
25 (at 10 M records); uptime's window is the summaries' first and last ``ts``
(``twin.analytics.frames``).

Two more columns are derived, each for a station's CALL of one action (``payload`` stays the
record; every other row holds null):

- ``transaction_event``: a TransactionEvent's fields the session and energy reports read,
  typed, with its meter readings as one flat list. Half the log is TransactionEvents: reading
  these columns instead of parsing their JSON text makes those reports several times faster.
- ``status_notification``: a StatusNotification's EVSE, connector, status and time, which
  uptime, afir and the status intervals read (at 10 M records: uptime's query 0.14 -> 0.105 s).

and one from ``transaction_event``:

- ``meter_extremes``: per TransactionEvent, the lowest and highest reading of each energy
  register and the highest of each power, what the sessions report needs of its readings:
  reading a few numbers an event instead of unnesting every reading.

Archives written before a column lack it; readers then derive the same from ``payload``
(``twin.analytics.frames``), or read the readings where ``meter_extremes`` is missing, and
``twin compact`` writes it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from twin.captures import SUMMARY
from twin.envelope import iso_ms
from twin.messages import EXPORT, IMPORT, P_EXPORT, P_IMPORT

INSTANT = pa.timestamp("us", tz="UTC")
READING = pa.struct([("sampled", INSTANT), ("measurand", pa.string()), ("value", pa.float64())])
TRANSACTION_EVENT = pa.struct([
    ("event_type", pa.string()), ("transaction_id", pa.string()), ("stopped_reason", pa.string()),
    ("evse_id", pa.int64()), ("happened", INSTANT), ("offline", pa.bool_()), ("reservation_id", pa.int64()),
    ("readings", pa.list_(READING)),
])  # fmt: skip
"""What ``transaction_event`` holds. Timestamps are instants, parsed once here rather than at
every report (sessions and energy read 6.7 M of them at 10 M records: 0.5 s each report);
text that is not an ISO 8601 time is null. Archives of session 4 hold them as text; readers
cast either."""

STATUS_NOTIFICATION = pa.struct([
    ("evse_id", pa.int64()), ("connector_id", pa.int64()), ("status", pa.string()), ("happened", INSTANT),
])  # fmt: skip
"""What ``status_notification`` holds: ``evseId``, ``connectorId``, ``connectorStatus`` and
``timestamp``, typed as for ``transaction_event``."""

EXTREMES = {
    "import_wh_min": (IMPORT, "min"), "import_wh_max": (IMPORT, "max"),
    "export_wh_min": (EXPORT, "min"), "export_wh_max": (EXPORT, "max"),
    "import_w_max": (P_IMPORT, "max"), "export_w_max": (P_EXPORT, "max"),
}  # fmt: skip
"""``meter_extremes``' fields: the measurand each is of (a reading without one is of the import
register, as OCPP says), and which extreme of its values."""
METER_EXTREMES = pa.struct([(name, pa.float64()) for name in EXTREMES])
"""What ``meter_extremes`` holds: null for any record but a TransactionEvent with its
``transaction_event``; a field is null where the event has no numeric reading of it."""

SCHEMA = pa.schema([
    ("station_id", pa.string()), ("origin", pa.string()), ("msg_type", pa.int8()), ("msg_id", pa.string()),
    ("action", pa.string()), ("payload", pa.string()), ("ts", pa.timestamp("ms", tz="UTC")),
    ("protocol", pa.string()), ("conn_id", pa.string()), ("seq", pa.int64()), ("valid", pa.bool_()),
    ("error", pa.string()), ("transaction_event", TRANSACTION_EVENT), ("status_notification", STATUS_NOTIFICATION),
    ("meter_extremes", METER_EXTREMES),
])  # fmt: skip


def table(records: list[Mapping[str, Any]]) -> pa.Table:
    """Envelopes as an Arrow table of the archive's schema."""
    dumps = orjson.dumps
    derived = ("payload", "ts", *DERIVED_COLUMNS)
    columns = {name: [r[name] for r in records] for name in SCHEMA.names if name not in derived}
    columns["payload"] = [dumps(r["payload"]).decode() for r in records]
    for name, (_, derive) in DERIVED.items():
        columns[name] = [derive(r) for r in records]
    arrays = {name: pa.array(values, SCHEMA.field(name).type) for name, values in columns.items()}
    arrays["ts"] = pa.array([r["ts"] for r in records], pa.string()).cast(SCHEMA.field("ts").type)
    arrays["meter_extremes"] = meter_extremes(arrays["transaction_event"])
    return pa.Table.from_arrays([arrays[name] for name in SCHEMA.names], schema=SCHEMA)


def transaction_event(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``transaction_event`` column of a record: its TransactionEvent fields, typed; None for
    any other record. A field of the wrong JSON type is null, as a cast in SQL would make it."""
    p = record["payload"]
    if record["action"] != "TransactionEvent" or record["msg_type"] != 2 or record["origin"] != "cs":
        return None
    if not isinstance(p, dict):
        return None
    info = p.get("transactionInfo")
    info = info if isinstance(info, dict) else {}
    evse = p.get("evse")
    readings = []
    for mv in _list(p.get("meterValue")):
        sampled = _instant(mv.get("timestamp"))
        for sv in _list(mv.get("sampledValue")):
            value = sv.get("value")
            readings.append({"sampled": sampled, "measurand": _text(sv.get("measurand")),
                             "value": value if isinstance(value, int | float) and not isinstance(value, bool)
                             else None})  # fmt: skip
    offline = p.get("offline")
    return {
        "event_type": _text(p.get("eventType")), "transaction_id": _text(info.get("transactionId")),
        "stopped_reason": _text(info.get("stoppedReason")),
        "evse_id": _integer(evse.get("id")) if isinstance(evse, dict) else None,
        "happened": _instant(p.get("timestamp")),
        "offline": offline if isinstance(offline, bool) else None, "reservation_id": _integer(p.get("reservationId")),
        "readings": readings,
    }  # fmt: skip


def status_notification(record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``status_notification`` column of a record: its StatusNotification fields, typed;
    None for any other record."""
    p = record["payload"]
    if record["action"] != "StatusNotification" or record["msg_type"] != 2 or record["origin"] != "cs":
        return None
    if not isinstance(p, dict):
        return None
    return {"evse_id": _integer(p.get("evseId")), "connector_id": _integer(p.get("connectorId")),
            "status": _text(p.get("connectorStatus")), "happened": _instant(p.get("timestamp"))}  # fmt: skip


DERIVED: dict[str, tuple[str, Callable[[Mapping[str, Any]], dict[str, Any] | None]]] = {
    "transaction_event": ("TransactionEvent", transaction_event),
    "status_notification": ("StatusNotification", status_notification),
}
"""The derived columns of a record: the action each is for, and how a record (``payload`` as
JSON) gives it. ``meter_extremes`` is derived from ``transaction_event``, a column at a time."""
DERIVED_COLUMNS = (*DERIVED, "meter_extremes")


def meter_extremes(events: pa.Array | pa.ChunkedArray) -> pa.Array:
    """The ``meter_extremes`` column of a ``transaction_event`` column (see ``METER_EXTREMES``):
    the readings of all events grouped by event and measurand at once, in Arrow."""
    if isinstance(events, pa.ChunkedArray):
        events = events.combine_chunks() if events.num_chunks else pa.array([], TRANSACTION_EVENT)
    readings = pc.struct_field(events, "readings")
    flat = pc.list_flatten(readings)
    grouped = pa.table({
        "row": pc.list_parent_indices(readings),
        "measurand": pc.fill_null(pc.struct_field(flat, "measurand"), IMPORT),
        "value": pc.struct_field(flat, "value"),
    }).group_by(["row", "measurand"], use_threads=False).aggregate([("value", "min"), ("value", "max")])  # fmt: skip
    fields = []
    for measurand, extreme in EXTREMES.values():
        found = grouped.filter(pc.equal(grouped.column("measurand"), measurand))
        values = np.zeros(len(events))
        known = np.zeros(len(events), dtype=bool)
        extremes = found.column(f"value_{extreme}")
        rows = found.column("row").to_numpy()
        values[rows] = extremes.to_numpy(zero_copy_only=False)
        known[rows] = extremes.is_valid().to_numpy(zero_copy_only=False)
        fields.append(pa.array(values, pa.float64(), mask=~known))
    return pa.StructArray.from_arrays(fields, fields=list(METER_EXTREMES), mask=events.is_null())


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 time (without an offset: UTC, as SQL reads it here), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else None


def _list(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def write(root: str | Path, records: Iterable[Mapping[str, Any]], unique: bool = False) -> int:
    """Append envelopes to the archive, a file per run of records of one capture date (one
    per date for records in log order); returns how many. Order within a file is kept.
    ``root``: a directory, or an object-store URL pyarrow understands (``s3://bucket/path``,
    ``gs://...``, ``file:///...``). ``unique``: as for :func:`write_file`."""
    n = 0
    for date, group in groupby(records, key=lambda r: r["ts"][:10]):
        part = list(group)
        write_file(root, f"date={date}", table(part), unique)
        n += len(part)
    return n


def write_file(root: str | Path, partition: str, data: pa.Table, unique: bool = False) -> str:
    """One file, under its final name only once it is whole: written aside and renamed on a
    local disk; on an object store, where an upload appears whole or not at all, directly.
    ``unique``: the caller knows each ``(conn_id, seq)`` occurs once in ``data``, and the
    summary says so (checking it here would cost the simulator 0.3 s a day's file)."""
    name = f"part-{uuid.uuid4().hex}.parquet"
    store, base = location(root)
    data = data.replace_schema_metadata({SUMMARY: orjson.dumps(summary(data, unique))})
    if store is not None:
        final = f"{base.rstrip('/')}/{partition}/{name}"
        store.create_dir(f"{base.rstrip('/')}/{partition}", recursive=True)
        _write_clustered(data, final, store)
        return final
    directory = Path(base) / partition
    directory.mkdir(parents=True, exist_ok=True)
    aside = directory / f".{name}.tmp"
    _write_clustered(data, str(aside))
    os.replace(aside, directory / name)
    return str(directory / name)


def summary(data: pa.Table, unique: bool) -> dict[str, Any]:
    """A file's summary for its footer (see the module)."""

    def first_last(column: str) -> list[Any]:
        ends = pc.min_max(data.column(column))
        return [ends["min"].as_py(), ends["max"].as_py()]

    ts = [iso_ms(t.timestamp()) if t else None for t in first_last("ts")]
    derived = [name for name in DERIVED_COLUMNS if name in data.column_names]
    return {"unique_keys": unique, "stations": first_last("station_id"), "ts": ts, "derived": derived}


def location(root: str | Path) -> tuple[Any, str]:
    """Where an archive lives: an object store's pyarrow filesystem and the path in it, or
    None and a local directory (``file://`` URLs included)."""
    text = str(root)
    if "://" in text and not text.startswith("file://"):
        from pyarrow import fs

        return fs.FileSystem.from_uri(text)
    return None, text.removeprefix("file://")


CLUSTER = [("action", "ascending"), ("station_id", "ascending")]
ROW_GROUP_MIN = 8192
"""Actions with fewer rows than this share a row group, whose statistics then span them (a
row group costs about 2 KB of footer); an action with more has its own."""
ROW_GROUP_MAX = 131_072
"""A large action's rows are split into row groups of at most this many, each a range of
stations (the dashboard's station page at 10 M records: 2.9 -> 0.9 s, 1.9 -> 0.7 GB)."""


DICTIONARY = ["station_id", "origin", "action", "protocol", "conn_id", "error", "transaction_event.event_type",
              "transaction_event.stopped_reason", "transaction_event.readings.list.element.measurand",
              "status_notification.status"]  # fmt: skip
"""The columns of few distinct values, dictionary-encoded. The others (times, ids, numbers,
payloads) are smaller without: a dictionary per row group for each made a day's file 28 MB
at 1 Mi rows a row group and 36 MB at 128 Ki; now 24 MB either way."""


def _write_clustered(data: pa.Table, where: str, filesystem: Any = None) -> None:
    """``data`` as one Parquet file, clustered (see the module): a stable sort, so each
    action's rows keep their order."""
    data = data.take(pc.sort_indices(data, CLUSTER)) if data.num_rows else data
    runs = pc.run_end_encode(data.column("action").combine_chunks()).run_ends.to_pylist()
    with pq.ParquetWriter(where, data.schema, filesystem=filesystem, compression="zstd", use_dictionary=DICTIONARY,
                          sorting_columns=pq.SortingColumn.from_ordering(data.schema, CLUSTER)) as writer:  # fmt: skip
        for start, end in _row_groups(runs):
            writer.write_table(data.slice(start, end - start), row_group_size=ROW_GROUP_MAX)


def _row_groups(run_ends: list[int]) -> Iterator[tuple[int, int]]:
    """Row groups ``(start, end)`` over runs of one action each (given by where they end): a
    run of ``ROW_GROUP_MIN`` rows or more alone, smaller neighbours together."""
    start = previous = 0
    for end in run_ends:
        if end - previous >= ROW_GROUP_MIN and previous > start:
            yield start, previous  # the small runs before a large one
            start = previous
        if end - start >= ROW_GROUP_MIN:
            yield start, end
            start = end
        previous = end
    if previous > start:
        yield start, previous


def compact(root: str | Path, progress: Callable[[int, int], None] | None = None) -> Iterator[dict[str, Any]]:
    """Rewrite the archive in today's layout, a date at a time: the date's files merged into
    one, each record once, the derived columns as this version types them (files written
    before one, or with text times, get it from ``payload``), clustered. Yields what it did for
    each date. The archive agent writes a file per batch (at 2,000 frames/s, 8,640 a day),
    and every file costs a reader its footer and a scan.

    Readers never miss a record: a date's new file is in place before its old files go (in
    between, readers see each record twice, and drop one). Files that appear meanwhile (the
    worker still writing) stay for the next run. A date already in the layout (one file,
    today's schema, clustered) is left alone; a date with a file that cannot be read is left
    whole, with the reason (``why``). A date is read into memory at once. The new file's
    summary says its keys are unique (see the module).
    ``progress(done, dates)`` is called as each date starts."""
    from pyarrow import fs

    remote, base = location(root)
    store = remote or fs.LocalFileSystem()
    dates: dict[str, list[Any]] = {}
    for info in store.get_file_info(fs.FileSelector(base, recursive=True, allow_not_found=True)):
        parent, _, name = info.path.rpartition("/")
        partition = parent.rpartition("/")[2]
        if info.is_file and name.endswith(".parquet") and not name.startswith(".") and partition.startswith("date="):
            dates.setdefault(partition, []).append(info)
    for i, (partition, files) in enumerate(sorted(dates.items())):
        if progress is not None:
            progress(i, len(dates))
        size = sum(f.size for f in files)
        as_was = {"date": partition.removeprefix("date="), "files_before": len(files), "files_after": len(files),
                  "records": None, "duplicates": 0, "bytes_before": size, "bytes_after": size, "why": None}  # fmt: skip
        try:
            footers = [pq.ParquetFile(store.open_input_file(f.path)) for f in files]
            if len(files) == 1 and _in_layout(footers[0]):
                yield {**as_was, "result": "already compact", "records": footers[0].metadata.num_rows}
                continue
            merged = pa.concat_tables([_as_today(footer.read()) for footer in footers])
        except (OSError, pa.ArrowException) as exc:
            yield {**as_was, "result": "unreadable", "why": str(exc)}
            continue
        kept = _first_of_each(merged)
        written = write_file(root, partition, kept, unique=True) if kept.num_rows else None
        for f in files:
            store.delete_file(f.path)
        yield {**as_was, "result": "compacted", "records": kept.num_rows, "duplicates": merged.num_rows - kept.num_rows,
               "files_after": 1 if written else 0,
               "bytes_after": store.get_file_info(written).size if written else 0}  # fmt: skip


def _in_layout(footer: pq.ParquetFile) -> bool:
    """Today's schema, every row group declared clustered, and a summary saying its keys are unique."""
    clustered = pq.SortingColumn.from_ordering(SCHEMA, CLUSTER)
    meta = footer.metadata
    said = _json((meta.metadata or {}).get(SUMMARY.encode()))
    return (
        footer.schema_arrow.equals(SCHEMA)
        and isinstance(said, dict) and said.get("unique_keys") is True
        and all(meta.row_group(i).sorting_columns == clustered for i in range(meta.num_row_groups))
    )  # fmt: skip


def _as_today(table: pa.Table) -> pa.Table:
    """A file's table in today's schema; a derived column derived again from ``payload`` where
    the file lacks it or types it otherwise (``meter_extremes`` from ``transaction_event``)."""
    if table.schema.equals(SCHEMA):
        return table
    n = table.num_rows
    arrays = {f.name: table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
              for f in SCHEMA if f.name not in DERIVED_COLUMNS}  # fmt: skip
    stored: list[list[Any]] = []  # the records' columns as Python values, only if a column is derived from them
    for name, (wanted, derive) in DERIVED.items():
        kind = SCHEMA.field(name).type
        if name in table.column_names and table.schema.field(name).type == kind:
            arrays[name] = table.column(name)
            continue
        stored = stored or [arrays[c].to_pylist() for c in ("action", "msg_type", "origin", "payload")]
        arrays[name] = pa.array([
            derive({"action": a, "msg_type": m, "origin": o, "payload": _json(p)}) if a == wanted else None
            for a, m, o, p in zip(*stored, strict=True)
        ], kind)  # fmt: skip
    arrays["meter_extremes"] = meter_extremes(arrays["transaction_event"])  # always as the column it is of says
    return pa.Table.from_arrays([arrays[name] for name in SCHEMA.names], schema=SCHEMA)


def _json(text: str | bytes | None) -> Any:
    """The value of JSON text, or None where it is not JSON (a payload's derived columns are then null)."""
    try:
        return orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        return None


def _first_of_each(table: pa.Table) -> pa.Table:
    """Each ``(conn_id, seq)`` once: its first row (the rows kept in their order)."""
    rows = pa.array(range(table.num_rows), pa.int64())
    keyed = table.select(["conn_id", "seq"]).append_column("row", rows)
    first = keyed.group_by(["conn_id", "seq"], use_threads=False).aggregate([("row", "min")]).column("row_min")
    return table.take(first.take(pc.sort_indices(first)))
