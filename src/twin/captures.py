"""Captures: the frame log outside Kafka. A CAPTURE argument is either a ``.jsonl`` file of
envelopes (one per line, in log order) or a Parquet archive directory (hive-partitioned
``date=YYYY-MM-DD/``; ``payload`` as JSON text, ``ts`` as ``timestamp[ms, UTC]``).

Readers drop duplicate ``(conn_id, seq)`` (the log is at-least-once) and yield each
station's records in log order.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from twin import envelope, kafka_security
from twin.envelope import Envelope

SUMMARY = "twin.summary"
"""An archive file's footer key for its writer's summary of it, as JSON (see ``twin.archive``):
``unique_keys`` (each ``(conn_id, seq)`` is in the file once), its first and last
``stations`` and ``ts``, and the ``derived`` columns it has."""


class CaptureError(ValueError):
    """The capture cannot be read; the message says why."""


def shown(where: str | Path) -> str:
    """``where`` (a capture or an archive) fit to print: an object-store URL without the
    secrets it may carry (a password before ``@``, ``secret_key`` and ``session_token`` in
    the query)."""
    text = str(where)
    if "://" not in text:
        return text
    text = re.sub(r"(://[^/@:]*):[^/@]*@", r"\1:***@", text)
    return re.sub(r"([?&](?:secret_key|session_token)=)[^&]*", r"\1***", text)


def local(capture: str | Path) -> Path:
    """Where ``capture`` is on this machine, or a :class:`CaptureError` that says why it is
    nowhere. The archive agent and ``twin compact`` also write to an object store; reading
    one is for a copy of it here."""
    text = str(capture)
    if "://" in text:
        raise CaptureError(
            f"{shown(text)} is a URL; captures are read from a path on this machine (an object-store archive: "
            "copy it to a directory first, its date=... layout as it is, e.g. with `aws s3 sync`)"
        )
    path = Path(text)
    if not path.exists():
        raise CaptureError(f"no capture at {path}")
    if path.is_dir() and next(path.rglob("*.parquet"), None) is None:
        raise CaptureError(
            f"no archive at {path}: a directory without Parquet files (an archive holds date=YYYY-MM-DD/*.parquet, "
            "as the archive agent and `twin compact` write them; a capture file ends in .jsonl)"
        )
    return path


def read(
    path: str | Path,
    *,
    until: str | None = None,
    dedupe: bool = True,
    stations: Collection[str] | None = None,
    part: tuple[int, Parts] | None = None,
) -> Iterator[Envelope]:
    """Every record of a capture, duplicates dropped (unless ``dedupe`` is False); with
    ``until``, only those captured at or before that moment (an ISO timestamp); with
    ``stations``, only those stations' records (an archive reads no others, a ``.jsonl``
    decodes no others); with ``part=(i, parts)``, only the records of the stations of part
    ``i`` (:class:`Parts`: a ``.jsonl`` decodes no others)."""
    p = local(path)
    seen = Seen() if dedupe else None
    if p.is_dir():
        records: Iterable[Envelope] = _parquet(p, stations)
        if part is not None:
            records = (r for r in records if _wanted(str(r.get("station_id") or ""), None, part))
        if seen is not None:
            records = (r for r in records if seen.keep(r))
    else:
        records = _jsonl(p, None if stations is None else set(stations), part, seen)
    if not until:
        yield from records
        return
    limit = envelope.parse_ts(until)
    for record in records:
        if envelope.parse_ts(record["ts"]) <= limit:
            yield record


class Seen:
    """Which ``(connection, seq)`` were seen: per connection the run of consecutive seqs
    seen (a connection's records come in order, the run grows at its end) and a set of any
    others. Half the time of a set of every pair, and a tenth of its memory. A connection is
    any key: ``conn_id``, or ``(station_id, conn_id)``."""

    __slots__ = ("runs",)

    def __init__(self) -> None:
        self.runs: dict[Any, list[Any]] = {}  # connection -> [low, high, set of others or None]

    def keep(self, record: Envelope) -> bool:
        """Whether ``record`` is the first of its ``(station, connection, seq)``: duplicates
        are dropped by station and connection, as the fold knows a record again, so that the
        parts of a capture (:class:`Parts`) agree."""
        return self.first((record.get("station_id"), record["conn_id"]), record["seq"])

    def first(self, conn_id: Any, seq: int) -> bool:
        """Whether this is the first time ``(conn_id, seq)`` is seen; it is seen from now on."""
        run = self.runs.get(conn_id)
        if run is None:
            self.runs[conn_id] = [seq, seq, None]
            return True
        low, high, others = run
        if seq == high + 1:
            again = others is not None and seq in others
            if others:
                others.discard(seq)
                while seq + 1 in others:  # the run reaches the others seen beyond it
                    seq += 1
                    others.discard(seq)
            run[1] = seq
            return not again
        if low <= seq <= high:
            return False
        if others is None:
            others = run[2] = set()
        elif seq in others:
            return False
        others.add(seq)
        return True


class Parts:
    """How a capture's stations are shared among ``n`` parts (processes that fold it): the
    stations of its first lines spread greedily by their count of records there, so that the
    parts hold about as many; any other station by a hash of its id. The same in every process
    that works it out from the same file."""

    __slots__ = ("n", "given")

    def __init__(self, n: int, counts: Mapping[str, int] | None = None) -> None:
        self.n = n
        self.given: dict[str, int] = {}
        load = [0] * n
        for station, count in sorted((counts or {}).items(), key=lambda kv: (-kv[1], kv[0])):
            lightest = min(range(n), key=lambda i: (load[i], i))
            self.given[station] = lightest
            load[lightest] += count

    @classmethod
    def of_capture(cls, path: str | Path, n: int, lines: int = 100_000) -> Parts:
        """Parts for a capture, from the stations of its first ``lines`` lines."""
        counts: dict[str, int] = {}
        p = local(path)
        if n > 1 and not p.is_dir():
            with p.open("rb", buffering=1 << 20) as f:
                for line in itertools.islice(f, lines):
                    station = _station_at_head(line)
                    if station is None:
                        try:
                            station = str(orjson.loads(line).get("station_id") or "")
                        except (orjson.JSONDecodeError, AttributeError):
                            continue  # not a record: the reader names it
                    counts[station] = counts.get(station, 0) + 1
        return cls(n, counts)

    def of(self, station: str) -> int:
        """Which part a station's records belong to."""
        found = self.given.get(station)
        return found if found is not None else zlib.crc32(station.encode()) % self.n


_LEAD = b'{"station_id":"'
"""How an envelope's line begins as twin writes it (:func:`twin.envelope.dumps`)."""
_HEAD = 64
"""The first bytes of a line that name its station, when its id ends within them."""


def _jsonl(
    path: Path,
    stations: Collection[str] | None = None,
    part: tuple[int, Parts] | None = None,
    seen: Seen | None = None,
) -> Iterator[Envelope]:
    """The records of a ``.jsonl`` capture (of ``stations``, of ``part``), without those
    ``seen`` already has (:meth:`Seen.keep`, inlined: this loop is a rebuild's floor)."""
    choosy = stations is not None or part is not None
    runs = seen.runs if seen is not None else {}
    verdicts: dict[bytes, bool] = {}  # a line's first bytes, the station id's end among them -> wanted
    with path.open("rb", buffering=1 << 20) as f:  # a MiB a read: 8 KiB reads took 40% longer a line
        for number, line in enumerate(f, start=1):
            verdict = None  # None: decode the line to know
            if choosy:  # the station id read from the line's head, undecoded
                verdict = verdicts.get(line[:_HEAD])
                if verdict is None:
                    station = _station_at_head(line)
                    if station is not None:
                        verdict = _wanted(station, stations, part)
                        if line.find(b'"', 15) < _HEAD:  # the id ends among the first bytes
                            verdicts[line[:_HEAD]] = verdict
                if verdict is False:
                    continue  # another part's or an unasked station's line: not decoded
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                if not line.strip():
                    continue  # a blank line (checked only here: a copy of every line costs)
                raise CaptureError(f"{path}:{number}: not JSON ({exc})") from None
            if not isinstance(record, dict) or "conn_id" not in record or "seq" not in record:
                raise CaptureError(f"{path}:{number}: not a frame envelope")
            station = record.get("station_id")
            if station is not None and not isinstance(station, str):
                raise CaptureError(f"{path}:{number}: not a frame envelope (its station_id is not a string)")
            if choosy and verdict is None and not _wanted(station or "", stations, part):
                continue
            if seen is not None:
                key, seq = (station, record["conn_id"]), record["seq"]
                run = runs.get(key)
                if run is not None and seq == run[1] + 1 and not run[2]:
                    run[1] = seq  # the next of its connection's run, as most are: Seen.first's fast path
                elif not seen.first(key, seq):
                    continue
            yield record  # type: ignore[misc]


def _station_at_head(line: bytes) -> str | None:
    """The station id at the head of an envelope's line, read without decoding the line; None
    where only decoding it says (another first key, an escape in the id, not UTF-8)."""
    end = line.find(b'"', 15) if line.startswith(_LEAD) else -1
    head = line[15:end]
    if end < 0 or b"\\" in head:
        return None
    try:
        return head.decode()
    except UnicodeDecodeError:
        return None


def _wanted(station: str, stations: Collection[str] | None, part: tuple[int, Parts] | None) -> bool:
    return (stations is None or station in stations) and (part is None or part[1].of(station) == part[0])


def inventory_path(capture: str | Path) -> Path:
    """Where a capture's station inventory lives: ``ARCHIVE/_stations.json`` (readers of
    the hive layout skip ``_`` files) or ``CAPTURE.stations.json`` beside a ``.jsonl``."""
    p = Path(capture)
    return p.with_name(p.name + ".stations.json") if p.suffix == ".jsonl" else p / "_stations.json"


def _parquet(path: Path, stations: Collection[str] | None = None) -> Iterator[Envelope]:
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(path, format="parquet", partitioning="hive")
        where = None if stations is None else ds.field("station_id").isin(list(stations))
        table = dataset.to_table(columns=list(envelope.FIELDS), filter=where)
    except Exception as exc:
        raise CaptureError(f"{path}: not a Parquet archive of envelopes ({exc})") from None
    table = table.sort_by(
        [("station_id", "ascending"), ("ts", "ascending"), ("conn_id", "ascending"), ("seq", "ascending")]
    )
    for row in table.to_pylist():
        row["payload"] = orjson.loads(row["payload"]) if row["payload"] else {}
        row["ts"] = envelope.iso_ms(row["ts"].timestamp())
        yield row  # type: ignore[misc]


def write_jsonl(path: str | Path, records: Iterable[Envelope | dict[str, Any]]) -> int:
    """Write envelopes as JSON lines; returns how many."""
    n = 0
    with Path(path).open("wb") as f:
        for record in records:
            f.write(envelope.dumps(record) + b"\n")
            n += 1
    return n


class TopicLog:
    """The records of a topic from its beginning to its end as it is now (records arriving
    while it reads are read too); ``total`` is the count the end offsets promise."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        from kafka import KafkaConsumer, TopicPartition

        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=1000,
                                      **kafka_security.kafka_python())
        self.parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or [])]
        self.consumer.assign(self.parts)
        self.consumer.seek_to_beginning()
        self.ends = self.consumer.end_offsets(self.parts)
        self.total = sum(self.ends.values())

    def __iter__(self) -> Iterator[Envelope]:
        try:
            while True:
                # Past the end offsets, on until a poll finds nothing: Tansu reports a
                # partition's end as its last batch's base offset + 1, short of a batch of
                # several records.
                batches = self.consumer.poll(timeout_ms=500)
                if not batches and all(self.consumer.position(tp) >= self.ends[tp] for tp in self.parts):
                    return
                for batch in batches.values():
                    for message in batch:
                        yield orjson.loads(message.value)
        finally:
            self.consumer.close()
