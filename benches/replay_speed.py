"""Replay throughput and timing against our gateway (csms mode, capturing to the embedded
broker), with a trivial echo CSMS in another process as the baseline in the same run:

- ``--speed max`` with 1,000 stations: frames sent per second;
- ``--speed 60`` with 500 stations: how late each frame leaves against its scaled
  recorded time (send-timing error p50/p99; target p99 < 50 ms).

Broker, gateway, echo CSMS and the replay share the 2 cores.

    .venv/bin/python benches/replay_speed.py [--max-stations 1000] [--paced-stations 500] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from replay import Options, Selection, run, scripts
from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.settings import Settings
from twin.simulator import simulate

ECHO = """
import asyncio, sys, orjson
from websockets.asyncio.server import serve
async def handler(ws):
    async for text in ws:
        frame = orjson.loads(text)
        if frame[0] == 2:
            await ws.send(orjson.dumps([3, frame[1], {}]).decode())
async def main():
    async with serve(handler, "127.0.0.1", int(sys.argv[1]), subprotocols=["ocpp2.1", "ocpp2.0.1"], max_size=2**20):
        await asyncio.Future()
asyncio.run(main())
"""


def wait_port(port: int, timeout: float = 30) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def replay(records: list[dict[str, Any]], target: str, speed: float | None, prefix: str) -> dict[str, Any]:
    plans = scripts(records, Selection(prefix=prefix))
    summary = asyncio.run(run(plans, Options(target, speed, call_timeout=30))).summary()
    summary["frames_per_s"] = round(summary["frames_sent"] / summary["seconds"])
    return {k: summary[k] for k in ("stations", "frames_sent", "responses", "errors", "mismatches", "seconds",
                                    "frames_per_s", "rtt_p50_ms", "rtt_p99_ms", "send_timing_error_p50_ms",
                                    "send_timing_error_p99_ms")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-stations", type=int, default=1000)
    parser.add_argument("--max-days", type=float, default=0.2, help="traffic replayed at speed max")
    parser.add_argument("--paced-stations", type=int, default=500)
    parser.add_argument("--paced-days", type=float, default=0.03, help="traffic replayed at speed 60 (0.03: 43 s)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    fast = [r for day in simulate(args.max_stations, args.max_days, seed=11) for r in day]
    paced = [r for day in simulate(args.paced_stations, args.paced_days, seed=12) for r in day]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), log=Path(tmp) / "tansu.log") as broker:
        settings = Settings(partitions=4)
        ensure_topics(settings, broker.bootstrap)
        gw_port, echo_port = free_port(), free_port()
        env = {**os.environ, "TWIN_PARTITIONS": "4"}
        procs = [
            subprocess.Popen([sys.executable, "-m", "twin", "gateway", "-b", broker.bootstrap, "--port",
                              str(gw_port), "--spool", f"{tmp}/spool"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env),
            subprocess.Popen([sys.executable, "-c", ECHO, str(echo_port)], stdout=subprocess.DEVNULL),
        ]  # fmt: skip
        try:
            wait_port(gw_port)
            wait_port(echo_port)
            for name, port in (("echo", echo_port), ("gateway", gw_port)):
                target = f"ws://127.0.0.1:{port}/ocpp"
                results[f"max_{name}"] = replay(fast, target, None, f"M{name[0]}-")
                results[f"speed60_{name}"] = replay(paced, target, 60.0, f"P{name[0]}-")
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)
    results["max_gateway_vs_echo"] = round(
        results["max_gateway"]["frames_per_s"] / results["max_echo"]["frames_per_s"], 3
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, value in results.items():
            print(f"{name:22} {json.dumps(value)}")


if __name__ == "__main__":
    main()
