"""Simulator throughput: records per second into a capture offline, JSON lines and the
Parquet archive, with one process and with one per core; the baseline in the same run is
writing the same records as JSON lines with nothing to generate, so the ratio shows what
generating costs. Also the size of a capture per station-day, in both formats.

    .venv/bin/python benches/simulator.py [--stations 1000] [--days 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import orjson

from twin.simulator import write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--days", type=float, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    result: dict[str, object] = {"stations": args.stations, "days": args.days, "cores": cores}
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, cores}):
            for kind, out in (("jsonl", f"{tmp}/c.jsonl"), ("parquet", f"{tmp}/archive")):
                shutil.rmtree(out, ignore_errors=True)
                began = time.perf_counter()
                n = write(out, args.stations, args.days, seed=1, workers=workers)
                result[f"{kind}_records_per_s_{workers}_process"] = round(n / (time.perf_counter() - began))
                result["records"] = n
        jsonl_bytes = Path(f"{tmp}/c.jsonl").stat().st_size
        parquet_bytes = sum(p.stat().st_size for p in Path(f"{tmp}/archive").rglob("*.parquet"))
        records = [orjson.loads(line) for line in Path(f"{tmp}/c.jsonl").read_bytes().splitlines()]
        began = time.perf_counter()
        with open(f"{tmp}/again.jsonl", "wb") as f:
            f.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        result["baseline_write_only_records_per_s"] = round(len(records) / (time.perf_counter() - began))
    station_days = args.stations * args.days
    result["records_per_station_day"] = round(int(result["records"]) / station_days)  # type: ignore[call-overload]
    result["jsonl_bytes_per_station_day"] = round(jsonl_bytes / station_days)
    result["parquet_bytes_per_station_day"] = round(parquet_bytes / station_days)
    result["size_1000_stations_7_days_parquet_mb"] = round(parquet_bytes / station_days * 7000 / 1e6, 1)
    result["size_1000_stations_7_days_jsonl_gb"] = round(jsonl_bytes / station_days * 7000 / 1e9, 2)
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:40} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
