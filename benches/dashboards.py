"""Dashboard pages at fleet scale: each page run by Streamlit's AppTest on a big archive
(default: a simulated 2,000-station archive of ~10 M records), in archive-only mode, in a
fresh process: the first run (nothing cached) and a second run (the report cache warm),
with the process's peak memory. The ratio first/second is what the cache buys.

    .venv/bin/python benches/dashboards.py [--archive DIR] [--stations 2000] [--days 6.3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.dataset as ds

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["fleet", "station", "energy", "reservations", "monitoring", "uptime", "migration"]

RUN = """
import resource, sys, time
from streamlit.testing.v1 import AppTest
page = sys.argv[1]
times = []
for _ in range(2):
    began = time.perf_counter()
    at = AppTest.from_file(page, default_timeout=600).run()
    times.append(time.perf_counter() - began)
    assert not at.exception, [e.value for e in at.exception]
print(times[0], times[1], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, flush=True)
import os; os._exit(0)  # not waiting for the app's background reports
"""


def measure(archive: Path, page: str) -> dict[str, float]:
    env = {**os.environ, "TWIN_ARCHIVE": str(archive), "TWIN_API": "http://127.0.0.1:9"}  # archive only
    done = subprocess.run([sys.executable, "-c", RUN, str(ROOT / "dashboards" / "pages" / f"{page}.py")],
                          env=env, capture_output=True, text=True, check=True)  # fmt: skip
    first, second, peak = (float(x) for x in done.stdout.split()[-3:])
    return {"first_s": round(first, 2), "cached_s": round(second, 3), "peak_mib": round(peak),
            "first_over_cached": round(first / second, 1) if second else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", help="an existing archive; default: simulate one")
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--days", type=float, default=6.3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(args.archive) if args.archive else Path(tmp) / "archive"
        if not args.archive:
            subprocess.run([sys.executable, "-m", "twin", "simulate", "--stations", str(args.stations), "--days",
                            str(args.days), "--out", str(archive)], check=True)  # fmt: skip
        records = ds.dataset(archive, format="parquet", partitioning="hive").count_rows()
        results = {"records": records, "pages": {}}
        for page in PAGES:
            results["pages"][page] = row = measure(archive, page)
            if not args.json:
                print(f"{page:<13} first {row['first_s']:>6.2f} s   cached {row['cached_s']:>6.3f} s   "
                      f"peak {row['peak_mib']:>5} MiB   first/cached {row['first_over_cached']}x", flush=True)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"({records:,} records)")


if __name__ == "__main__":
    main()
