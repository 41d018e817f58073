"""Schema validation on the hot path: twin's cached validators (jsonschema-rs's verdict on
what it passes, fastjsonschema's on the rest: :mod:`twin.schemas`) against fastjsonschema
alone and jsonschema (what the ``ocpp`` package validates with), same payloads, same run.

    .venv/bin/python benches/validation.py [--n 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import jsonschema

from twin import schemas

sys.path.insert(0, str(Path(__file__).parent))
from gateway import STATUS, TX  # noqa: E402

# the payloads of the gateway benchmark's mix: one source for both
PAYLOADS = {"Heartbeat": {}, "StatusNotification": STATUS, "TransactionEvent": TX}


def rate(fn: object, payload: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(payload)  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = []
    for action, payload in PAYLOADS.items():
        compiled = schemas.validator("ocpp2.1", action, "Request")
        document = schemas.schema("ocpp2.1", action, "Request") or {}
        reference = jsonschema.Draft6Validator(document)
        generated = schemas._generated(document)[0]  # fastjsonschema alone
        ours = rate(compiled, payload, args.n)
        alone = rate(generated, payload, args.n)
        theirs = rate(reference.validate, payload, max(args.n // 10, 100))
        rows.append(
            {
                "action": action,
                "twin_per_s": round(ours),
                "fastjsonschema_per_s": round(alone),
                "jsonschema_per_s": round(theirs),
                "ratio": round(ours / theirs, 1),
                "ratio_fastjsonschema": round(ours / alone, 1),
            }
        )
    start = time.perf_counter()
    schemas.validator.cache_clear()
    compiled_count = schemas.warm()
    cold = time.perf_counter() - start
    result = {"validations": rows, "compile_all_station_validators_s": round(cold, 2), "validators": compiled_count}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for row in rows:
            print(
                f"{row['action']:20} twin {row['twin_per_s']:>9,}/s   "
                f"fastjsonschema {row['fastjsonschema_per_s']:>9,}/s (x{row['ratio_fastjsonschema']})   "
                f"jsonschema {row['jsonschema_per_s']:>7,}/s (x{row['ratio']})"
            )
        print(f"compiling the {compiled_count} validators a station's frames need: {cold:.2f} s (once per process)")


if __name__ == "__main__":
    main()
