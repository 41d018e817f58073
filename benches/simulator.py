"""Simulator throughput: records generated per second offline, for the records alone and
written as JSON lines and as the Parquet archive; the baseline in the same run is writing
the same records again with nothing to generate (orjson lines), so the ratios show what
generating costs against writing. Also the size of a capture per station-day, both formats.

    .venv/bin/python benches/simulator.py [--stations 1000] [--days 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import orjson

from twin import archive
from twin.simulator import simulate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--days", type=float, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        began = time.perf_counter()
        n = sum(len(day) for day in simulate(args.stations, args.days, seed=1))
        generate = time.perf_counter() - began

        began = time.perf_counter()
        with open(f"{tmp}/c.jsonl", "wb") as f:
            for day in simulate(args.stations, args.days, seed=1):
                f.write(b"".join(orjson.dumps(r) + b"\n" for r in day))
        to_jsonl = time.perf_counter() - began
        jsonl_bytes = Path(f"{tmp}/c.jsonl").stat().st_size

        began = time.perf_counter()
        for day in simulate(args.stations, args.days, seed=1):
            archive.write(f"{tmp}/archive", day)
        to_parquet = time.perf_counter() - began
        parquet_bytes = sum(p.stat().st_size for p in Path(f"{tmp}/archive").rglob("*.parquet"))

        records = [orjson.loads(line) for line in Path(f"{tmp}/c.jsonl").read_bytes().splitlines()]
        began = time.perf_counter()
        with open(f"{tmp}/again.jsonl", "wb") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        baseline = time.perf_counter() - began
    station_days = args.stations * args.days
    result = {
        "stations": args.stations, "days": args.days, "records": n,
        "generate_records_per_s": round(n / generate), "jsonl_records_per_s": round(n / to_jsonl),
        "parquet_records_per_s": round(n / to_parquet), "baseline_write_only_records_per_s": round(n / baseline),
        "generate_vs_write_only": round(baseline / generate, 3),
        "records_per_station_day": round(n / station_days),
        "jsonl_bytes_per_station_day": round(jsonl_bytes / station_days),
        "parquet_bytes_per_station_day": round(parquet_bytes / station_days),
        "size_1000_stations_7_days_parquet_mb": round(parquet_bytes / station_days * 7000 / 1e6, 1),
        "size_1000_stations_7_days_jsonl_gb": round(jsonl_bytes / station_days * 7000 / 1e9, 2),
    }  # fmt: skip
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:40} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
