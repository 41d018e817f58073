"""Rebuilding twins from a capture in several processes: each station's twin is the one a
single process folds, whatever the lines look like; a station asked for alone reads only its
own lines; a bad line is named whichever process meets it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from twin import captures, envelope, fold, rebuild
from twin.cli import app

SAMPLE = Path(__file__).parent.parent / "datasets" / "sample"


def _odd(station_id: str, conn_id: str, seq: int, ts: str) -> dict[str, Any]:
    return envelope.lifecycle("Connected", {}, station_id=station_id, protocol="ocpp2.1", conn_id=conn_id, seq=seq,
                              ts=ts)  # fmt: skip


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample archive as a ``.jsonl``, with lines a reader of line heads must not misread:
    a station id with an escaped quote and one with a non-ASCII letter, an envelope whose keys
    come in another order, a blank line and redelivered records."""
    records = list(captures.read(SAMPLE))
    assert len({r["station_id"] for r in records}) >= 5
    path = tmp_path_factory.mktemp("rebuild") / "capture.jsonl"
    lines = [envelope.dumps(r) for r in records]
    reordered = {k: v for k, v in sorted(records[7].items()) if k != "station_id"} | {"station_id": "CS-ODD"}
    reordered["conn_id"], reordered["seq"] = "odd-1", 1
    lines[10:10] = [
        envelope.dumps(_odd('CS-"Q"', "q-1", 1, records[10]["ts"])),
        envelope.dumps(_odd("CS-Ü", "u-1", 1, records[10]["ts"])),
        orjson.dumps(reordered),
        b"",
        lines[3],  # redelivered
    ]
    lines.append(lines[-5])  # redelivered at the end
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _dump(twins: dict[str, Any]) -> dict[str, bytes]:
    return {k: orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for k, v in twins.items()}


@pytest.mark.parametrize("head", [0, 40, 100_000])
def test_the_parts_are_the_capture_shared_out_by_station(capture: Path, head: int) -> None:
    """Stations shared out by a hash (``head`` 0), by the counts of a few first lines and a hash
    for the rest, or by the counts of every line."""
    everything = list(captures.read(capture))
    for n in (2, 3):
        parts = captures.Parts.of_capture(capture, n, lines=head)
        shares = [list(captures.read(capture, part=(i, parts))) for i in range(n)]
        shared = (r for share in shares for r in share)
        assert sorted(map(envelope.dumps, shared)) == sorted(map(envelope.dumps, everything))
        owners: dict[str, set[int]] = {}
        for i, share in enumerate(shares):
            for r in share:
                owners.setdefault(r["station_id"], set()).add(i)
        assert all(owner == {parts.of(s)} for s, owner in owners.items())
        assert {'CS-"Q"', "CS-Ü", "CS-ODD"} <= set(owners)
        if head == 100_000:  # every count known: no part holds more than the lightest and the busiest station
            sizes = sorted(len(share) for share in shares)
            busiest = max(sum(1 for r in everything if r["station_id"] == s) for s in owners)
            assert sizes[-1] - sizes[0] <= busiest


def test_stations_are_shared_out_by_their_records() -> None:
    parts = captures.Parts(2, {"A": 50, "B": 30, "C": 25, "D": 5})
    assert [parts.of(s) for s in "ABCD"] == [0, 1, 1, 0]  # 55 and 55
    assert parts.of("E") == parts.of("E") in (0, 1)  # unseen: by its id's hash


def test_a_station_asked_for_reads_its_own_records(capture: Path) -> None:
    everything = list(captures.read(capture))
    for station in ('CS-"Q"', "CS-ODD", everything[0]["station_id"]):
        assert list(captures.read(capture, stations={station})) == [r for r in everything if r["station_id"] == station]


@pytest.mark.parametrize("processes", [2, 3])
def test_twins_folded_in_parts_are_those_of_one_process(capture: Path, processes: int) -> None:
    alone = fold.fold(captures.read(capture))
    seen: list[int] = []
    twins, n = rebuild.fold_capture(capture, processes=processes, progress=seen.append)
    assert n == len(list(captures.read(capture)))
    assert _dump(twins) == _dump(alone)
    until = sorted(r["ts"] for r in captures.read(capture))[len(seen) + 500]
    assert _dump(rebuild.fold_capture(capture, until=until, processes=processes)[0]) == _dump(
        fold.fold(captures.read(capture, until=until))
    )


def test_twin_rebuild_and_state_as_users_run_them(capture: Path) -> None:
    runner = CliRunner()
    one = runner.invoke(app, ["rebuild", str(capture), "--processes", "1", "--json"])
    two = runner.invoke(app, ["rebuild", str(capture), "-j", "2", "--json"])
    assert one.exit_code == two.exit_code == 0, (one.output, two.output)
    assert one.stdout == two.stdout
    rebuilt = orjson.loads(one.stdout)
    station = sorted(rebuilt["twins"])[1]
    state = runner.invoke(app, ["state", station, "--capture", str(capture), "--json"])
    assert state.exit_code == 0, state.output
    assert orjson.loads(state.stdout) == rebuilt["twins"][station]


def test_a_bad_line_is_named_by_the_process_that_meets_it(tmp_path: Path, capture: Path) -> None:
    lines = capture.read_bytes().splitlines()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join([*lines[:20], lines[20][:-7], *lines[21:]]) + b"\n")  # a line cut short
    for processes in (1, 2):
        with pytest.raises(captures.CaptureError, match=r"bad.jsonl:21: not JSON"):
            rebuild.fold_capture(bad, processes=processes)
    result = CliRunner().invoke(app, ["rebuild", str(bad), "-j", "2"])
    assert result.exit_code == 1 and "bad.jsonl:21: not JSON" in result.output


@pytest.mark.parametrize("where", ["nowhere.jsonl", "s3://bucket/frames", "empty/"])
def test_a_capture_that_is_not_there_is_one_line(tmp_path: Path, where: str) -> None:
    """Nothing there, a URL, or a directory with no archive in it (the wrong one, say)."""
    if where == "empty/":
        (tmp_path / "empty" / "date=2026-03-02").mkdir(parents=True)
    where = where if "://" in where else str(tmp_path / where)
    for args in (["rebuild", where], ["rebuild", where, "-j", "2"], ["state", "CS-1", "--capture", where],
                 ["fleet", "--capture", where], ["report", "sessions", "--archive", where]):  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.exception)
        assert "Traceback" not in result.output, (args, result.output)
        assert re.search(r"no (capture|archive) at|is a URL", result.output), (args, result.output)


def test_stations_that_share_connection_ids_fold_the_same_in_parts(tmp_path: Path, capture: Path) -> None:
    """Two fleets' captures joined whose connection ids collide (as two simulations of one seed
    did): every record of each station counts, in one process as in several."""
    records = list(captures.read(capture))
    joined = tmp_path / "joined.jsonl"
    twice = [*records, *({**r, "station_id": f"B-{r['station_id']}"} for r in records)]
    joined.write_bytes(b"".join(envelope.dumps(r) + b"\n" for r in twice))
    alone, n = rebuild.fold_capture(joined)
    assert n == len(twice) and len(alone) == 2 * len(fold.fold(records))
    for processes in (2, 3):
        assert _dump(rebuild.fold_capture(joined, processes=processes)[0]) == _dump(alone)


def test_a_station_id_that_is_not_a_string_is_named(tmp_path: Path, capture: Path) -> None:
    lines = capture.read_bytes().splitlines()
    odd = tmp_path / "odd.jsonl"
    record = orjson.loads(lines[30])
    odd.write_bytes(b"\n".join([*lines[:30], orjson.dumps({**record, "station_id": 12345}), *lines[31:]]) + b"\n")
    for processes in (1, 2):
        with pytest.raises(captures.CaptureError, match=r"odd.jsonl:31: not a frame envelope \(its station_id"):
            rebuild.fold_capture(odd, processes=processes)


def test_a_time_without_a_zone_is_utc(capture: Path) -> None:
    station = next(iter(captures.read(capture)))["station_id"]
    at = sorted(r["ts"] for r in captures.read(capture))[1000][:19]  # 2026-03-02T08:00:00, no zone
    runner = CliRunner()
    bare = runner.invoke(app, ["state", station, "--capture", str(capture), "--at", at, "--json"])
    zoned = runner.invoke(app, ["state", station, "--capture", str(capture), "--at", at + "Z", "--json"])
    assert bare.exit_code == zoned.exit_code == 0, (bare.output, bare.exception)
    assert bare.stdout == zoned.stdout


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_parts_end_with_their_parent_however_it_ends(tmp_path: Path, capture: Path, how: signal.Signals) -> None:
    """The parent alone killed (a script's terminate(), the OOM killer): no part is left."""
    big = _big(tmp_path, capture)
    rebuild_ = subprocess.Popen([sys.executable, "-m", "twin", "rebuild", str(big), "-j", "2"],
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        time.sleep(2.5)
        parts = [int(p) for p in subprocess.run(["pgrep", "-P", str(rebuild_.pid)], capture_output=True,
                                                  text=True).stdout.split()]  # fmt: skip
        os.kill(rebuild_.pid, how)
        rebuild_.wait(30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(pid) for pid in parts):
            time.sleep(0.2)
    finally:
        for pid in parts:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert len(parts) == 2 and not any(_alive(pid) for pid in parts)


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def _big(tmp_path: Path, capture: Path) -> Path:
    records = [r for r in captures.read(capture) if r["station_id"] != 'CS-"Q"']
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:  # the sample many times over, each copy a fleet of its own (many twins to send)
        for copy in range(80):
            f.write(b"".join(envelope.dumps({**r, "station_id": f"{r['station_id']}-{copy}"}) + b"\n"
                             for r in records))  # fmt: skip
    return big


def test_ctrl_c_stops_every_process_of_a_rebuild(tmp_path: Path, capture: Path) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) ends the rebuild and its
    parts without a traceback from each part."""
    big = _big(tmp_path, capture)
    rebuild_ = subprocess.Popen([sys.executable, "-m", "twin", "rebuild", str(big), "-j", "2"], stderr=subprocess.PIPE,
                                start_new_session=True)  # fmt: skip
    try:
        time.sleep(2.5)  # started, its parts forked and folding
        parts = [int(p) for p in subprocess.run(["pgrep", "-P", str(rebuild_.pid)], capture_output=True,
                                                  text=True).stdout.split()]  # fmt: skip
        os.killpg(rebuild_.pid, signal.SIGINT)
        _, stderr = rebuild_.communicate(timeout=30)
    finally:
        if rebuild_.poll() is None:
            os.killpg(rebuild_.pid, signal.SIGKILL)
    assert len(parts) == 2, "two parts were folding"
    assert rebuild_.returncode == 130  # interrupted, as a shell counts SIGINT
    assert stderr.decode().count("Traceback") == 0, stderr.decode()[-2000:]
    for pid in parts:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
