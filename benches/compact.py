"""`twin compact` on an archive as the worker's archive agent writes it: a file per batch of
20,000 records (``streams.app.ARCHIVE_BATCH``), in log order. Times each report in a fresh
process on that archive (the baseline, in the same run) and again after ``twin compact``,
and the compaction itself with its peak memory.

    .venv/bin/python benches/compact.py [--stations 2000] [--days 6.13] [--batch 20000] [--json]

The defaults give ~10 M records, as benches/analytics.py does.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pyarrow.parquet as pq
from analytics import timed  # benches/ is on the path when a bench runs

from twin import archive
from twin.captures import inventory_path
from twin.simulator import inventory, write

REPORTS = {
    "sessions": "from twin.analytics import sessions_duckdb as f; n = len(f(A))",
    "energy": "from twin.analytics import energy_days_duckdb as f; n = len(f(A))",
    "uptime": "from twin.analytics.uptime import uptime as f; n = len(f(A)['ports'])",
    "afir": "from twin.analytics.afir import afir as f; n = len(f(A))",
}


def report(name: str, path: Path) -> dict[str, Any]:
    return timed([sys.executable, "-c", f"A = {str(path)!r}\n{REPORTS[name]}\nprint(n)"])


def as_the_agent_writes(source: Path, target: Path, batch: int) -> int:
    """``source``'s records rewritten a batch a file, in log order; how many files."""
    files = 0
    for file in sorted(source.rglob("*.parquet")):
        table = pq.read_table(file, partitioning=None).sort_by([("ts", "ascending"), ("conn_id", "ascending"),
                                                                ("seq", "ascending")])  # fmt: skip
        for start in range(0, table.num_rows, batch):
            archive.write_file(target, file.parent.name, table.slice(start, batch))
            files += 1
    inventory_path(target).write_bytes(inventory_path(source).read_bytes())
    return files


def prepare(tmp: Path, stations: int, days: float, batch: int) -> dict[str, int]:
    """The simulated archive and the agent's layout of it. It runs in a child process: a
    child forked from a large parent reports the parent's memory as its peak."""
    simulated, agent = tmp / "simulated", tmp / "agent"
    records = write(simulated, stations, days, seed=1, workers=os.cpu_count() or 1)
    inventory_path(simulated).write_bytes(orjson.dumps(inventory(stations, 1)))
    return {"records": records, "files": as_the_agent_writes(simulated, agent, batch)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--days", type=float, default=6.5)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--prepare", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare:
        print(json.dumps(prepare(args.prepare, args.stations, args.days, args.batch)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        agent = Path(tmp) / "agent"
        made = subprocess.run([sys.executable, __file__, "--prepare", tmp, "--stations", str(args.stations),
                               "--days", str(args.days), "--batch", str(args.batch)],
                              check=True, capture_output=True, text=True)  # fmt: skip
        result: dict[str, object] = json.loads(made.stdout)
        size = sum(f.stat().st_size for f in agent.rglob("*.parquet"))
        result["mb"] = round(size / 1e6, 1)
        before = {name: report(name, agent) for name in REPORTS}
        compaction = timed([sys.executable, "-m", "twin", "compact", str(agent), "--json"])
        after = {name: report(name, agent) for name in REPORTS}
        compacted = list(agent.rglob("*.parquet"))
        result["compact"] = {"seconds": compaction["seconds"], "peak_mib": compaction["peak_mib"],
                             "records_per_s": round(int(result["records"]) / compaction["seconds"]),  # type: ignore[call-overload]
                             "files_after": len(compacted),
                             "mb_after": round(sum(f.stat().st_size for f in compacted) / 1e6, 1)}  # fmt: skip
        for name in REPORTS:
            assert before[name]["out"] == after[name]["out"], f"{name}: {before[name]['out']} != {after[name]['out']}"
            result[name] = {"before_s": before[name]["seconds"], "after_s": after[name]["seconds"],
                            "before / after": round(before[name]["seconds"] / after[name]["seconds"], 1),
                            "peak_mib_after": after[name]["peak_mib"]}  # fmt: skip
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
