"""Reports at fleet scale: sessions, uptime and afir over a simulated archive of ~1 M and
~10 M records (2,000 stations), each run in fresh processes, with its peak memory. Two
references in the same run:

- the **floor**: one DuckDB scan of the same files (count and latest ``ts`` per station),
  the least any report over the whole log costs;
- a straightforward **pandas** implementation (read the columns with a filter, ``json.loads``
  each payload, accumulate in Python) of each report.

Each report is timed three ways, the median of ``--repeats`` runs (every run takes its turn
in each round, so all see the same machine):

- ``process``: the whole process, Python's start and every import included;
- ``call``: the report's call alone, its libraries imported before (DuckDB and twin's
  module; pandas and pyarrow): what computing the metric costs;
- ``cli``: ``twin report KIND --archive DIR --json`` as users run it, a process of its own
  (its start-up, the command line's imports and the JSON on stdout included).

Pandas' uptime is checked to be ours, port by port, before either is timed.

    .venv/bin/python benches/analytics.py [--sizes 1000000,10000000] [--stations 2000] [--repeats 3] [--json]
    .venv/bin/python benches/analytics.py --stations 1000 --days 14   # issue 23's archive: 11.3 M records
    .venv/bin/python benches/analytics.py --archive DIR   # an archive already written (with _stations.json)
    .venv/bin/python benches/analytics.py --archive DIR --no-pandas   # the floor, ours and the CLI only

``--before SRC`` times another version of twin in the same run, beside this one (SRC a ``src``
directory, e.g. ``git archive REV src | tar -x -C /tmp/rev``: its runs named "... (before)").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from twin.captures import inventory_path
from twin.simulator import inventory, write

RECORDS_PER_STATION_DAY = 775  # over a week (one day, benches/simulator.py: 818); the archive reaches the size

FLOOR = "import duckdb; floor = lambda a: duckdb.connect().execute(f\"SELECT station_id, count(*), max(ts) FROM read_parquet('{a}/**/*.parquet', hive_partitioning = true) GROUP BY station_id\").fetchall()"  # noqa: E501

RUN = {  # name: (imports, the call, which gives the rows)
    "floor": (FLOOR, "len(floor(A))"),
    "sessions duckdb": ("from twin.analytics.sessions import sessions_duckdb as f", "len(f(A))"),
    "sessions polars": ("from twin.analytics.sessions import sessions_polars as f; import polars", "len(f(A))"),
    "sessions pandas": ("import benches_pandas as b", "len(b.sessions(A))"),
    "uptime duckdb": ("from twin.analytics.uptime import uptime as f", "len(f(A)['ports'])"),
    "uptime pandas": ("import benches_pandas as b", "len(b.uptime(A))"),
    "afir duckdb": ("from twin.analytics.afir import afir as f", "len(f(A))"),
    "afir pandas": ("import benches_pandas as b", "len(b.afir(A))"),
}

PANDAS = '''
"""Straightforward pandas versions, the baseline."""
import json
from datetime import datetime
import pandas as pd
import pyarrow.parquet  # what pd.read_parquet reads with: imported here, not in the call

def sessions(path):
    df = pd.read_parquet(path, columns=["station_id", "conn_id", "seq", "origin", "payload"],
                         filters=[("action", "=", "TransactionEvent"), ("msg_type", "=", 2)])
    df = df[df.origin == "cs"].drop_duplicates(["conn_id", "seq"])
    acc = {}
    for station, text in zip(df.station_id, df.payload):
        p = json.loads(text)
        key = (station, p["transactionInfo"]["transactionId"])
        s = acc.setdefault(key, {"lo": None, "hi": None, "start": None, "end": None})
        for mv in p.get("meterValue", []):
            for sv in mv["sampledValue"]:
                if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                    v = sv["value"]
                    s["lo"] = v if s["lo"] is None else min(s["lo"], v)
                    s["hi"] = v if s["hi"] is None else max(s["hi"], v)
        if p["eventType"] == "Started":
            s["start"] = p["timestamp"]
        elif p["eventType"] == "Ended":
            s["end"] = p["timestamp"]
    return [{"station_id": k[0], "transaction_id": k[1], "import_kwh": ((v["hi"] or 0) - (v["lo"] or 0)) / 1000,
             "started_at": v["start"], "ended_at": v["end"]} for k, v in acc.items()]

UP_OR_EXCLUDED = ("Available", "Occupied", "Reserved", "Unavailable")

def uptime(path):
    """Each port's NEVI uptime % from its first status to the log's last record: the station
    offline (from its latest connection's Disconnected to the next Connected) and any status but
    these down; Unavailable excluded."""
    columns = ["station_id", "ts", "action", "msg_type", "origin", "payload", "conn_id", "seq", "valid"]
    df = pd.read_parquet(path, columns=columns,
                         filters=[("action", "in", ["Connected", "Disconnected", "StatusNotification"])])
    df = df[(df.msg_type == 0) | ((df.msg_type == 2) & (df.origin == "cs") & df.valid)]
    df = df.drop_duplicates(["conn_id", "seq"]).sort_values(["station_id", "ts", "conn_id", "seq"])
    end = pd.read_parquet(path, columns=["ts"]).ts.max()  # the log's last record
    ports = {}

    def accrue(station, status, online, minutes):
        for evse, state in status.items():
            t = ports.setdefault((station, evse), [0.0, 0.0])  # measured, down
            t[0] += minutes
            if online is False or state not in UP_OR_EXCLUDED:
                t[1] += minutes

    for station, group in df.groupby("station_id"):
        online, latest, status, last = None, None, {}, None
        for ts, action, conn, text in zip(group.ts, group.action, group.conn_id, group.payload):
            if status:
                accrue(station, status, online, (ts - last).total_seconds() / 60)
            last = ts
            if action == "Connected":
                online, latest = True, conn
            elif action == "Disconnected":
                if latest is None or latest == conn:  # an older connection closing after a newer one came: no outage
                    online = False
            else:
                p = json.loads(text)
                evse, state = p.get("evseId"), p.get("connectorStatus")
                if type(evse) is int and type(state) is str and state:
                    status[evse] = state
        if status:
            accrue(station, status, online, (end - last).total_seconds() / 60)  # the last state lasts to the end
    return {k: 100 * (m - d) / m for k, (m, d) in ports.items() if m}

def afir(path):
    actions = ["SetDefaultTariff", "SetChargingProfile", "StatusNotification", "Connected", "NotifyEVChargingNeeds",
               "Get15118EVCertificate"]
    columns = ["station_id", "ts", "action", "msg_type", "origin", "msg_id", "payload", "conn_id", "seq", "valid"]
    df = pd.read_parquet(path, columns=columns, filters=[("action", "in", actions)]).drop_duplicates(["conn_id", "seq"])
    answers = df[(df.msg_type == 3) & (df.origin == "cs")]
    accepted = {(c, m) for c, m, text in zip(answers.conn_id, answers.msg_id, answers.payload)
                if json.loads(text).get("status") == "Accepted"}
    per_kwh, smart, iso20, delays = set(), set(), set(), {}
    calls = df[df.msg_type == 2]
    for station, conn, msg, action, origin, ts, text, valid in zip(calls.station_id, calls.conn_id, calls.msg_id,
            calls.action, calls.origin, calls.ts, calls.payload, calls.valid):
        if origin == "csms" and (conn, msg) in accepted:
            if action == "SetDefaultTariff" and "energy" in json.loads(text).get("tariff", {}):
                per_kwh.add(station)
            elif action == "SetChargingProfile":
                smart.add(station)
        elif origin == "cs" and valid:
            p = json.loads(text)
            if action == "StatusNotification":
                sent = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
                delays.setdefault(station, []).append((ts - sent).total_seconds())
            elif action == "Get15118EVCertificate" and "15118:-20" in p.get("iso15118SchemaVersion", ""):
                iso20.add(station)
            elif action == "NotifyEVChargingNeeds" and "v2xChargingParameters" in p.get("chargingNeeds", {}):
                iso20.add(station)
    known = {s["station_id"]: s for s in json.load(open(f"{path}/_stations.json"))}
    pools = {}
    for station in set(df.station_id):
        pools.setdefault(known.get(station, {}).get("pool_id") or station, []).append(station)
    out = {}
    for pool, stations in pools.items():
        listed = [known[s] for s in stations if s in known]
        out[pool] = {
            "total_kw": sum(s["max_kw"] * s["evses"] for s in listed),
            "points_150": sum(s["evses"] for s in listed if s["max_kw"] >= 150),
            "per_kwh": all(s in per_kwh for s in stations if known.get(s, {}).get("max_kw", 0) >= 50),
            "smart": all(s in smart for s in stations),
            "iso20": all(s in iso20 or known.get(s, {}).get("iso15118") for s in stations),
            "p95_s": max((pd.Series(delays[s]).quantile(0.95) for s in stations if s in delays), default=None),
        }
    return out
'''


CLI = ("sessions", "uptime")
"""The reports also timed as ``twin report KIND`` (sessions and uptime: issue 23)."""
CLI_ROWS = {"sessions": "sessions", "uptime": "ports"}
OURS = ("duckdb", "polars", "cli")
"""The runs of twin's own code, which --before times twice."""


CHILD_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
"""The children's environment: Python's bytecode cached, as in a user's install (a checkout whose
.pyc files are stale compiles the modules at every start: 0.4 s of ``twin``'s)."""


def timed(command: list[str], out: Path | None = None, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``command``; its wall and CPU time, peak memory and the last line it printed (into
    ``out`` if given, unread: a report's JSON). (A child forked from a large parent reports the
    parent's memory as its peak: keep the parent small.)"""
    began = time.perf_counter()
    with open(out, "wb") if out else open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(command, stdout=sink if out else subprocess.PIPE, env=env or CHILD_ENV)
        if out:
            _, status, usage = os.wait4(proc.pid, 0)
            lines = []
        else:
            text = proc.stdout.read() if proc.stdout else b""  # read before waiting: a full pipe would block it
            _, status, usage = os.wait4(proc.pid, 0)
            lines = text.decode().strip().splitlines()
    seconds = time.perf_counter() - began
    if status != 0:
        raise RuntimeError(f"{command} failed")
    return {"seconds": round(seconds, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_mib": round(usage.ru_maxrss / 1024), "out": lines[-1] if lines else ""}  # fmt: skip


def timed_cli(kind: str, archive: Path, workdir: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """``twin report KIND --archive ARCHIVE --json`` as a user runs it: the installed ``twin``
    script beside this Python, its JSON written to a file; its time, peak memory and rows."""
    twin = Path(sys.executable).with_name("twin")
    out = workdir / f"{kind}.json"
    result = timed([str(twin), "report", kind, "--archive", str(archive), "--json"], out, env)
    rows = len(orjson.loads(out.read_bytes())[CLI_ROWS[kind]])
    out.unlink()
    return {"process_s": result["seconds"], "cpu_s": result["cpu_s"], "peak_mib": result["peak_mib"], "rows": rows}


def timed_report(
    run: tuple[str, str], archive: Path, workdir: Path, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """A report run in a fresh process on ``archive``: its time (whole process, and the call
    alone), peak memory and rows."""
    imports, call = run
    script = (f"import sys, time; sys.path.insert(0, {str(workdir)!r}); A = {str(archive)!r}\n{imports}\n"
              f"began = time.perf_counter(); n = {call}; print(n, time.perf_counter() - began)")  # fmt: skip
    result = timed([sys.executable, "-c", script], env=env)
    rows, call_s = result["out"].split()
    return {"process_s": result["seconds"], "call_s": float(call_s), "cpu_s": result["cpu_s"],
            "peak_mib": result["peak_mib"], "rows": int(rows)}  # fmt: skip


AGREE = """
import sys; sys.path.insert(0, {work!r})
import benches_pandas as b
from twin.analytics.uptime import uptime
theirs = b.uptime({archive!r})
ours = {{(p["station_id"], p["evse_id"]): p["uptime_pct"] for p in uptime({archive!r})["ports"]}}
print(len(ours), sorted(theirs) == sorted(ours) and max(abs(round(theirs[k], 3) - ours[k]) for k in ours))
"""


def uptime_agrees(archive: Path, workdir: Path) -> dict[str, Any]:
    """Whether pandas' uptime is ours: the same ports, each the same percentage (to the
    0.001 ours rounds to). A ratio between two metrics that differ would mean nothing."""
    done = subprocess.run([sys.executable, "-c", AGREE.format(work=str(workdir), archive=str(archive))],
                          capture_output=True, text=True, check=True)  # fmt: skip
    ports, difference = done.stdout.split()
    if difference == "False":
        raise AssertionError("pandas' uptime found other ports than ours")
    if float(difference) > 0.001:
        raise AssertionError(f"pandas' uptime differs from ours by up to {difference} points")
    return {"ports": int(ports), "max_difference_pct": float(difference)}


def records_in(archive: Path) -> int:
    """How many records an archive holds (counted in a child: the parent stays small)."""
    count = f"import duckdb; print(duckdb.execute(\"SELECT count(*) FROM '{archive}/**/*.parquet'\").fetchone()[0])"
    return int(subprocess.run([sys.executable, "-c", count], capture_output=True, text=True, check=True).stdout)


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The median time of each kind over ``runs``, the largest peak, and the rows (all equal)."""
    assert len({r["rows"] for r in runs}) == 1, "a report gave different rows from one run to the next"
    times = {kind: round(statistics.median(r[kind] for r in runs), 3) for kind in ("process_s", "call_s", "cpu_s")
             if kind in runs[0]}  # fmt: skip
    return {**times, "peak_mib": max(r["peak_mib"] for r in runs), "rows": runs[0]["rows"]}


def against_floor(row: dict[str, Any]) -> None:
    """Each report's times as multiples of the floor's, each kind against its own kind: the
    process and the CLI against the floor's process, the call against its call."""
    floor = row["floor"]
    for name in [n for n in row if isinstance(row[n], dict) and "process_s" in row[n] and n != "floor"]:
        ours = row[name]
        ratio = {"process_s": round(ours["process_s"] / floor["process_s"], 2),
                 "cpu_s": round(ours["cpu_s"] / floor["cpu_s"], 2)}  # fmt: skip
        if "call_s" in ours:
            ratio["call_s"] = round(ours["call_s"] / floor["call_s"], 2)
        row[f"{name} / floor"] = ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000000,10000000")
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--days", type=float, help="simulate this many days (--sizes ignored)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--archive", help="time the reports on this archive instead of writing one (--sizes ignored)")
    parser.add_argument("--no-pandas", action="store_true", help="leave out the pandas baseline (28 s a sessions run)")
    parser.add_argument("--before", help="a src directory of another version of twin, timed beside this one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "benches_pandas.py").write_text(PANDAS)
        sizes = [int(s) for s in args.sizes.split(",")] if not (args.archive or args.days) else [0]
        run = {name: r for name, r in RUN.items() if not (args.no_pandas and name.endswith("pandas"))}
        for size in sizes:
            if args.archive:
                archive = Path(args.archive)
                row: dict[str, Any] = {"records": records_in(archive), "archive": str(archive)}
            else:
                days = args.days or size / (args.stations * RECORDS_PER_STATION_DAY)
                archive = work / f"archive-{size}"
                began = time.perf_counter()
                n = write(archive, args.stations, days, seed=1, workers=os.cpu_count() or 1)
                inventory_path(archive).write_bytes(orjson.dumps(inventory(args.stations, 1)))
                generated = round(time.perf_counter() - began, 1)
                row = {"records": n, "days": round(days, 2), "generate_s": generated}
            if not args.no_pandas:
                row["uptime agrees"] = uptime_agrees(archive, work)
            trees: dict[str, dict[str, str] | None] = {"": None}
            if args.before:
                trees[" (before)"] = {**CHILD_ENV, "PYTHONPATH": str(Path(args.before).resolve())}
            names = [*run, *(f"{k} cli" for k in CLI)]
            runs: dict[str, list[dict[str, Any]]] = {
                f"{name}{tree}": [] for name in names for tree in trees if not tree or name.split()[-1] in OURS
            }
            for env in trees.values():  # once untimed: the bytecode written, the files in the page cache
                for kind in CLI:
                    timed_cli(kind, archive, work, env)
            for _ in range(args.repeats):  # round-robin: a slow minute of the machine falls on every report
                for name in names:
                    for tree, env in trees.items():
                        if f"{name}{tree}" in runs:
                            kind = name.split()[0]
                            runs[f"{name}{tree}"].append(timed_cli(kind, archive, work, env) if name.endswith(" cli")
                                                         else timed_report(run[name], archive, work, env))  # fmt: skip
            for name in runs:
                row[name] = median_of(runs[name])
            against_floor(row)
            for slower, faster in [(f"{r} pandas", f"{r} duckdb") for r in ("sessions", "uptime", "afir")] + [
                ("sessions polars", "sessions duckdb")
            ]:
                if slower not in row:
                    continue
                row[f"{slower} / {faster.split()[1]}"] = {kind: round(row[slower][kind] / row[faster][kind], 2)
                                                           for kind in ("process_s", "call_s")}  # fmt: skip
            results[str(row["records"])] = row
            print(json.dumps({row['records']: row}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
