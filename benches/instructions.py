"""Instructions a record, counted by valgrind: the figure a busy machine does not move.

Wall time on this shared machine moves 20-60% between rounds (the floor itself does), so a
change worth 5% cannot be seen in it. The instructions a process executes can: valgrind's
cachegrind (no cache simulation) counts them, the same on every run (``PYTHONHASHSEED=0``).
They are not time (a dict's pointer chasing costs more an instruction than orjson's loops),
so wall time stays the target's measure (``benches/fold.py``); this says whether a change
did less work, and how much, before and after in one run.

On a slice of a capture (the ``--records`` lines after ``--warm`` lines of warm-up, so the
twins are mid-capture, not new), each in a process of its own, less the same process doing
everything but the part measured:

- floor: reading the lines and ``orjson.loads`` of each (the floor of ``benches/fold.py``);
- read: ``captures.read`` of them, as a rebuild reads (decoding, the checks, duplicates);
- fold: ``fold.fold`` of the records (decoded beforehand) into the warm-up's twins.

    .venv/bin/python benches/instructions.py --capture week.jsonl [--records 20000]
        [--warm 10000] [--baseline /tmp/before/src] [--json]

Needs valgrind (``apt-get install valgrind``); a run takes about a minute a tree.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"

PARTS = {
    "floor": """
import orjson
if ON:
    with open(RECORDS, "rb") as f:
        for line in f:
            orjson.loads(line)
""",
    "read": """
from twin import captures
if ON:
    sum(1 for _ in captures.read(RECORDS))
""",
    "fold": """
import orjson
from twin import fold
warm = [orjson.loads(line) for line in open(WARM, "rb")]
records = [orjson.loads(line) for line in open(RECORDS, "rb")]
twins = fold.fold(warm)
if ON:
    fold.fold(records, twins)
""",
}


def instructions(src: Path, part: str, warm: Path, records: Path, on: bool) -> int:
    code = f"import gc\ngc.disable()\nON, WARM, RECORDS = {on}, {str(warm)!r}, {str(records)!r}\n" + PARTS[part]
    env = {**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(src)}
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null", sys.executable,
         "-c", code],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if found is None:
        raise SystemExit(f"valgrind said no instruction count:\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def measure(src: Path, warm: Path, records: Path, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for part in PARTS:
        done, base = (instructions(src, part, warm, records, on) for on in (True, False))
        out[part] = round((done - base) / n)
        print(f"  {src}: {part} {out[part]:,.0f} instructions a record", file=sys.stderr)
    out["read_x_floor"] = round(out["read"] / out["floor"], 3)
    out["read_and_fold_x_floor"] = round((out["read"] + out["fold"]) / out["floor"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capture", required=True, help="a .jsonl capture (e.g. benches/fold.py --simulate's)")
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--warm", type=int, default=10_000)
    parser.add_argument("--baseline", help="another checkout's src, measured the same way")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        warm, records = Path(tmp) / "warm.jsonl", Path(tmp) / "records.jsonl"
        with open(args.capture, "rb") as f:
            warm.write_bytes(b"".join(itertools.islice(f, args.warm)))
            lines = list(itertools.islice(f, args.records))
        records.write_bytes(b"".join(lines))
        result: dict[str, object] = {"capture": args.capture, "records": len(lines), "warm": args.warm}
        result["now"] = measure(SRC, warm, records, len(lines))
        if args.baseline:
            result["baseline"] = measure(Path(args.baseline), warm, records, len(lines))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    trees = [t for t in ("baseline", "now") if t in result]
    print(f"{len(lines):,} records after {args.warm:,} of warm-up, instructions a record (valgrind):")
    print(f"{'':24}" + "".join(f"{t:>14}" for t in trees))
    for key in ("floor", "read", "fold", "read_x_floor", "read_and_fold_x_floor"):
        print(f"{key:24}" + "".join(f"{result[t][key]:>14,}" for t in trees))  # type: ignore[index]


if __name__ == "__main__":
    main()
