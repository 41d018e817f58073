"""The archive on an object store: what the archive agent (``twin worker --archive URL``, and
``archive.write`` batch by batch as it calls it) and ``twin compact`` do when the archive is a
URL, against a real S3-protocol server (moto's, in its own process on 127.0.0.1), through
pyarrow's S3 client as in production. Reports read a copy on this machine; the copy must be
the archive, record for record."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kafka import KafkaProducer
from pyarrow import fs

from twin import archive, captures, envelope
from twin.analytics.sessions import sessions_duckdb
from twin.broker import EmbeddedBroker, free_port
from twin.envelope import Envelope
from twin.settings import Settings

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).parent.parent / "datasets" / "sample"


@pytest.fixture(scope="module")
def bucket() -> Iterator[tuple[str, fs.S3FileSystem]]:
    """An empty bucket ``archive`` on a fresh server: the archive's URL (credentials and
    endpoint in it, as a user would pass them) and a client of the server."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the S3 server did not start") from None
                time.sleep(0.1)
        store = fs.S3FileSystem(access_key="twin", secret_key="twin", endpoint_override=f"127.0.0.1:{port}",
                                scheme="http", region="us-east-1", allow_bucket_creation=True)  # fmt: skip
        store.create_dir("archive")
        store.create_dir("worker")
        yield f"s3://twin:twin@{{}}?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", store
    finally:
        server.terminate()
        server.wait(timeout=10)


def copied(store: fs.S3FileSystem, to: Path, where: str = "archive/fleet") -> Path:
    """The archive as it is on the store, copied here (``aws s3 sync``'s part)."""
    fs.copy_files(where, str(to), source_filesystem=store, destination_filesystem=fs.LocalFileSystem())
    return to


def key(record: Envelope) -> tuple[str, int]:
    return record["conn_id"], record["seq"]


def test_an_archive_on_an_object_store_takes_batches_again_and_compacts(
    bucket: tuple[str, fs.S3FileSystem], tmp_path: Path
) -> None:
    """The sample's records in batches, one batch delivered twice (at least once): each lands
    as whole files under ``date=...``, nothing else (no file written aside); ``twin compact``
    on the URL leaves a file a date with every record once; a copy of it reports the sample's
    sessions exactly; compacting again changes nothing."""
    url, store = bucket[0].format("archive/fleet"), bucket[1]
    records = list(captures.read(SAMPLE))
    batches = [records[i : i + 5000] for i in range(0, len(records), 5000)]
    for batch in [*batches, batches[1]]:
        archive.write(url, batch)
    dates = sorted({f"date={r['ts'][:10]}" for r in records})
    files = [f for f in store.get_file_info(fs.FileSelector("archive/fleet", recursive=True)) if f.is_file]
    assert all(f.path.rsplit("/", 2)[1] in dates and f.base_name.startswith("part-") for f in files), files
    assert {f.path.rsplit("/", 2)[1] for f in files} == set(dates)

    landed = list(captures.read(copied(store, tmp_path / "before"), dedupe=False))
    assert len(landed) == len(records) + len(batches[1])
    assert {key(r): r for r in landed} == {key(r): r for r in records}, "every record, as it was"

    done = subprocess.run([sys.executable, "-m", "twin", "compact", url, "--json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    body = orjson.loads(done.stdout)
    assert body["archive"].startswith("s3://twin:***@archive/fleet?"), "its secret not printed"
    assert [d["date"] for d in body["dates"]] == [d.removeprefix("date=") for d in dates]
    assert {d["result"] for d in body["dates"]} == {"compacted"}
    assert (body["duplicates"], body["records"], body["files_after"]) == (len(batches[1]), len(records), len(dates))

    after = copied(store, tmp_path / "after")
    assert sorted(p.parent.name for p in after.rglob("*.parquet")) == dates
    kept = list(captures.read(after, dedupe=False))
    assert sorted(map(key, kept)) == sorted(map(key, records)), "each record once"
    assert {key(r): r for r in kept} == {key(r): r for r in records}, "as it was"
    assert sessions_duckdb(after) == sessions_duckdb(SAMPLE)

    again = subprocess.run([sys.executable, "-m", "twin", "compact", url, "--json"], capture_output=True, text=True)
    assert {d["result"] for d in orjson.loads(again.stdout)["dates"]} == {"already compact"}


def test_the_worker_archives_ocpp_frames_to_an_object_store(
    broker: EmbeddedBroker, settings: Settings, bucket: tuple[str, fs.S3FileSystem], tmp_path: Path
) -> None:
    """``twin worker --archive URL``: every frame on ``ocpp.frames`` lands on the store, as it was."""
    where = f"worker/{tmp_path.name}"  # the bucket is the module's: each engine's worker archives apart
    url, store = bucket[0].format(where), bucket[1]
    records = [r for r in captures.read(SAMPLE) if r["ts"] < "2026-03-02T06"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    for record in records:
        producer.send(settings.topics.frames, key=record["station_id"].encode(), value=envelope.dumps(record))
    producer.flush()
    producer.close()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": settings.topic_prefix, "TWIN_PARTITIONS": str(settings.partitions)}
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen([sys.executable, "-m", "twin", "worker", "-b", broker.bootstrap, "--web-port",
                                   str(free_port()), "--data-dir", str(tmp_path / "worker"), "--archive", url],
                                  stdout=out, stderr=subprocess.STDOUT, env=env)  # fmt: skip
    try:
        deadline, archived = time.monotonic() + 90, {}
        while len(archived) < len(records) and time.monotonic() < deadline:
            assert worker.poll() is None, log.read_text()[-3000:]
            time.sleep(1)
            if store.get_file_info(where).type == fs.FileType.Directory:
                copy = copied(store, tmp_path / f"copy-{time.monotonic_ns()}", where)
                try:
                    archived = {key(r): r for r in captures.read(copy, dedupe=False)}
                except captures.CaptureError:
                    continue  # the directory before its first file is in place (written aside, then renamed)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert archived == {key(r): r for r in records}, log.read_text()[-3000:]
    assert f"archiving ocpp.frames to s3://twin:***@{where}" in " ".join(log.read_text().split())
    assert "twin:twin" not in log.read_text(), "its secret not printed"


def test_a_report_on_an_object_store_url_says_to_copy_the_archive_here() -> None:
    url = "s3://key:hush@fleet/archive?region=eu-west-1&secret_key=hush&session_token=hush"
    done = subprocess.run([sys.executable, "-m", "twin", "report", "uptime", "--archive", url],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    said = "".join(done.stderr.split())  # the console wraps, wherever
    assert "s3://key:***@fleet/archive?region=eu-west-1&secret_key=***&session_token=***isaURL" in said, said
    assert "copyittoadirectory" in said and "hush" not in said
