"""The archive on an object store: what the archive agent (``archive.write``, batch by batch)
and ``twin compact`` do when ``--archive`` is a URL, against a real S3-protocol server
(moto's, in its own process on 127.0.0.1), through pyarrow's S3 client as in production.
Reports read a copy on this machine; the copy must be the archive, record for record."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from pyarrow import fs

from twin import archive, captures
from twin.analytics.sessions import sessions_duckdb
from twin.broker import free_port
from twin.envelope import Envelope

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
        yield f"s3://twin:twin@archive/fleet?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1", store
    finally:
        server.terminate()
        server.wait(timeout=10)


def copied(store: fs.S3FileSystem, to: Path) -> Path:
    """The archive as it is on the store, copied here (``aws s3 sync``'s part)."""
    fs.copy_files("archive/fleet", str(to), source_filesystem=store, destination_filesystem=fs.LocalFileSystem())
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
    url, store = bucket
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
    assert [d["date"] for d in body["dates"]] == [d.removeprefix("date=") for d in dates]
    assert {d["result"] for d in body["dates"]} == {"compacted"}
    assert (body["duplicates"], body["records"], body["files_after"]) == (len(batches[1]), len(records), len(dates))

    after = copied(store, tmp_path / "after")
    assert sorted(p.parent.name for p in after.rglob("*.parquet")) == dates
    kept = list(captures.read(after, dedupe=False))
    assert sorted(map(key, kept)) == sorted(map(key, records)) and {key(r): r for r in kept} == {
        key(r): r for r in records
    }
    assert sessions_duckdb(after) == sessions_duckdb(SAMPLE)

    again = subprocess.run([sys.executable, "-m", "twin", "compact", url, "--json"], capture_output=True, text=True)
    assert {d["result"] for d in orjson.loads(again.stdout)["dates"]} == {"already compact"}


def test_a_report_on_an_object_store_url_says_to_copy_the_archive_here() -> None:
    done = subprocess.run([sys.executable, "-m", "twin", "report", "uptime", "--archive", "s3://fleet/archive"],
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1
    said = " ".join(done.stderr.split())  # the console wraps
    assert "s3://fleet/archive is a URL" in said and "copy it to a directory" in said, said
