"""Gateway benchmark: 2,000 concurrent stations on loopback, a realistic mix of calls.

Two phases, each run with capture on and with capture off (the ratio is capture's price):
- saturate: every station sends its next CALL as soon as the last is answered; gives
  frames captured per second (each CALL and its answer are two frames);
- paced: the stations together offer a fixed rate (default 6,000 frames/s) with jitter;
  gives the CALL round-trip p50/p99 at that load. (A closed loop cannot: with 2,000 calls
  always outstanding, latency is 2,000 / throughput by Little's law.)

Broker (embedded Tansu), gateway (``python -m twin gateway``) and this load generator
share the machine; CPU seconds per process during each run show what bounds it. The load
generator runs with its garbage collector off, so its own pauses do not count as latency.

    .venv/bin/python benches/gateway.py [--stations 2000] [--seconds 15] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import websockets

from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.settings import Settings

TS = "2026-03-01T08:00:00.000Z"
TX = {
    "eventType": "Updated", "timestamp": TS, "triggerReason": "MeterValuePeriodic", "seqNo": 1,
    "transactionInfo": {"transactionId": "T-1", "chargingState": "Charging"},
    "evse": {"id": 1, "connectorId": 1},
    "meterValue": [{"timestamp": TS, "sampledValue": [
        {"value": 12345.6, "measurand": "Energy.Active.Import.Register"},
        {"value": 7200.0, "measurand": "Power.Active.Import"},
        {"value": 0.0, "measurand": "Energy.Active.Export.Register"},
        {"value": 54.0, "measurand": "SoC", "unitOfMeasure": {"unit": "Percent"}}]}],
}  # fmt: skip
STATUS = {"timestamp": TS, "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1}
BOOT = {"reason": "PowerUp", "chargingStation": {"model": "Bench", "vendorName": "twin"}}
# (action, payload, weight): about what a charging station sends
MIX = [("TransactionEvent", TX, 60), ("Heartbeat", {}, 20), ("StatusNotification", STATUS, 15),
       ("Authorize", {"idToken": {"idToken": "TAG", "type": "ISO14443"}}, 5)]  # fmt: skip


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else float("nan")


class Load:
    def __init__(self, url: str, stations: int, seconds: float, rate: float | None) -> None:
        self.url, self.stations, self.seconds, self.rate = url, stations, seconds, rate
        self.rtts: list[float] = []
        self.calls = 0
        self.errors = 0
        actions = [(a, p) for a, p, w in MIX for _ in range(w)]
        self.plan = [random.Random(i).choice(actions) for i in range(1000)]

    async def run(self) -> None:
        connected = asyncio.Event()
        opened = 0
        handshake = asyncio.Semaphore(100)
        start_at = [0.0]

        async def station(i: int) -> None:
            nonlocal opened
            async with handshake:
                ws = await websockets.connect(
                    f"{self.url}/BENCH-{i:05d}", subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                    compression=None, ping_interval=None, open_timeout=60,
                )  # fmt: skip
            try:
                await ws.send(json.dumps([2, f"{i}-boot", "BootNotification", BOOT]))
                await ws.recv()
                opened += 1
                if opened == self.stations:
                    start_at[0] = time.perf_counter() + 0.5
                    connected.set()
                await connected.wait()
                rng = random.Random(i)
                interval = self.stations / (self.rate / 2) if self.rate else 0.0  # 2 frames a call
                next_send = start_at[0] + rng.random() * (interval or 0.01)
                stop_at = start_at[0] + self.seconds
                k = 0
                while True:
                    now = time.perf_counter()
                    if interval:
                        if next_send > now:
                            await asyncio.sleep(next_send - now)
                        next_send += interval * (0.5 + rng.random())  # jittered, same mean
                    if time.perf_counter() >= stop_at:
                        break
                    action, payload = self.plan[(i + k) % len(self.plan)]
                    k += 1
                    t0 = time.perf_counter()
                    await ws.send(json.dumps([2, f"{i}-{k}", action, payload]))
                    answer = await ws.recv()
                    if t0 >= start_at[0]:
                        self.rtts.append(time.perf_counter() - t0)
                        self.calls += 1
                    if not answer.startswith("[3"):
                        self.errors += 1
            finally:
                await ws.close()

        await asyncio.gather(*(station(i) for i in range(self.stations)))


def run_once(stations: int, seconds: float, rate: float | None, capture: bool, workdir: Path) -> dict[str, float]:
    port = free_port()
    with EmbeddedBroker(port, log=workdir / "tansu.log") as broker:
        settings = Settings(bootstrap=broker.bootstrap, partitions=4)
        ensure_topics(settings, broker.bootstrap)
        gw_port = free_port()
        args = [sys.executable, "-m", "twin", "gateway", "-b", broker.bootstrap, "--port", str(gw_port),
                "--spool", str(workdir / "spool")] + ([] if capture else ["--no-capture"])  # fmt: skip
        gateway = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(workdir / "gateway.log", "ab"))  # noqa: SIM115
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    with __import__("socket").create_connection(("127.0.0.1", gw_port), 0.2):
                        break
                except OSError:
                    time.sleep(0.2)
            assert broker.process is not None
            rss0 = rss_bytes(gateway.pid)
            load = Load(f"ws://127.0.0.1:{gw_port}/ocpp", stations, seconds, rate)
            cpu0 = {"gateway": cpu_seconds(gateway.pid), "broker": cpu_seconds(broker.process.pid)}
            me0 = time.process_time()
            t0 = time.perf_counter()
            gc.disable()  # the load generator's own pauses are not the gateway's latency
            try:
                asyncio.run(load.run())
            finally:
                gc.enable()
            wall = time.perf_counter() - t0
            cpu = {
                "gateway": cpu_seconds(gateway.pid) - cpu0["gateway"],
                "broker": cpu_seconds(broker.process.pid) - cpu0["broker"],
                "loadgen": time.process_time() - me0,
            }
            rss1 = rss_bytes(gateway.pid)
        finally:
            gateway.terminate()
            gateway.wait(10)
    if os.environ.get("BENCH_TAIL"):
        when = getattr(load.rtts, "when", [])
        slow = sorted((w, r) for w, r in zip(when, load.rtts, strict=True) if r > 0.05)
        if when:
            t0 = min(when)
            print(
                "slow calls at (s into window, ms):",
                [(round(w - t0, 2), round(r * 1000)) for w, r in slow][:40],
                file=sys.stderr,
            )
    frames = 2 * load.calls
    return {
        "frames_per_s": frames / seconds,
        "calls": load.calls,
        "errors": load.errors,
        "rtt_p50_ms": pct(load.rtts, 0.50) * 1000,
        "rtt_p99_ms": pct(load.rtts, 0.99) * 1000,
        "rss_per_connection_kib": (rss1 - rss0) / stations / 1024,
        "cpu_share": {k: round(v / wall, 2) for k, v in cpu.items()},  # cores busy, over the whole run
    }


def _median(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over repeated runs."""
    out: dict[str, Any] = {}
    for key, value in each[0].items():
        if isinstance(value, dict):
            out[key] = {k: round(statistics.median(r[key][k] for r in each), 2) for k in value}
        else:
            out[key] = statistics.median(r[key] for r in each)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=6000, help="offered frames/s in the paced phase")
    parser.add_argument("--phases", default="saturate,paced", help="which phases to run")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; medians are reported")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase, rate in (("saturate", None), ("paced", args.rate)):
            if phase not in args.phases.split(","):
                continue
            for i in range(args.repeat):
                for capture in (True, False):  # alternate, so drift in the machine hits both
                    name = f"{phase}/{'capture' if capture else 'no-capture'}"
                    print(f"running {name} ({i + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                    runs.setdefault(name, []).append(run_once(args.stations, args.seconds, rate, capture, Path(tmp)))
    results = {name: _median(each) for name, each in runs.items()}
    nan = {
        "frames_per_s": float("nan"),
        "rtt_p50_ms": float("nan"),
        "rtt_p99_ms": float("nan"),
        "rss_per_connection_kib": float("nan"),
    }
    sat_on, sat_off = results.get("saturate/capture", nan), results.get("saturate/no-capture", nan)
    paced_on, paced_off = results.get("paced/capture", nan), results.get("paced/no-capture", nan)
    ratios = [
        off["frames_per_s"] / on["frames_per_s"]
        for on, off in zip(runs.get("saturate/capture", []), runs.get("saturate/no-capture", []), strict=True)
    ]
    summary = {
        "stations": args.stations,
        "seconds": args.seconds,
        "repeat": args.repeat,
        "frames_captured_per_s": round(sat_on["frames_per_s"]),
        "frames_per_s_without_capture": round(sat_off["frames_per_s"]),
        "capture_cost_ratio": round(statistics.median(ratios), 2) if ratios else None,
        "capture_cost_ratios": [round(r, 2) for r in ratios],
        "paced_rate": args.rate,
        "paced_rtt_p50_ms": round(paced_on["rtt_p50_ms"], 1),
        "paced_rtt_p99_ms": round(paced_on["rtt_p99_ms"], 1),
        "paced_rtt_p99_ms_without_capture": round(paced_off["rtt_p99_ms"], 1),
        "gateway_rss_per_connection_kib": round(sat_on["rss_per_connection_kib"], 1),
        "runs": results,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for key, value in summary.items():
            if key != "runs":
                print(f"{key:36} {value}")
        for name, run in results.items():
            print(
                f"  {name:22} {json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in run.items()})}"
            )


if __name__ == "__main__":
    main()
