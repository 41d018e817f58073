"""Gateway benchmark: 1,000 concurrent stations on loopback, a realistic mix of calls, the
gateway (csms mode, capturing into the embedded Tansu broker) against a bare websockets echo
server (the floor: the same load answered by a server that records nothing).

Two phases, each run for every server of ``--configs``, alternating within each round:
- saturate: every station sends its next CALL as soon as the last is answered; gives
  frames per second (each CALL and its answer are two frames) and the ratio to echo's;
- paced: the stations together offer a fixed rate (default 4,000 frames/s: 2 calls/s from
  each of 1,000) with jitter; gives the CALL round trip (p50/p99/p99.9 and a histogram).
  A closed loop cannot: with every call always outstanding, latency is stations /
  throughput by Little's law.

``--configs`` may add ``no-capture`` (the gateway recording nothing: capture's price) and
``before`` (the gateway of another checkout, ``--before DIR``, e.g. a ``git worktree`` of
the commit before a change: before and after in one run).

Broker, server and this load generator share the machine with whatever else runs on it;
CPU per process and the machine's other busy time ("others", /proc/stat) during each run
show what bounds it. The server's CPU per frame is given over the whole run (the 1,000
connects, boots and closes included) and over the calls alone (``..._calls``: its CPU read
when the calls start and when they stop). The load generator runs with its garbage collector off, so its own
pauses do not count as latency.

    .venv/bin/python benches/gateway.py [--stations 1000] [--rate 4000] [--seconds 15]
        [--configs echo,gateway,before --before /tmp/twin-before] [--repeat 3] [--json]
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
    def __init__(self, url: str, stations: int, seconds: float, rate: float | None, server: int | None = None) -> None:
        self.url, self.stations, self.seconds, self.rate = url, stations, seconds, rate
        self.server = server  # its CPU is read when the calls start and when they stop
        self.server_cpu: list[float] = []
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
                    if self.server is not None:
                        loop, pid = asyncio.get_running_loop(), self.server
                        for at in (0.5, 0.5 + self.seconds):
                            loop.call_later(at, lambda: self.server_cpu.append(cpu_seconds(pid)))
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


ECHO = """
import asyncio, sys
from websockets.asyncio.server import serve

async def answer(ws):
    async for message in ws:
        await ws.send('[3,' + message.split(',', 2)[1] + ',{}]')

async def main():
    async with serve(answer, '127.0.0.1', int(sys.argv[1]), reuse_port=True, compression=None,
                     ping_interval=None, subprotocols=['ocpp2.1']):
        await asyncio.Future()

asyncio.run(main())
"""
"""A bare websockets echo server: the floor. It answers every CALL with ``[3, id, {}]`` and
records nothing: what any Python websockets server costs on this machine under this load."""

EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


def histogram(rtts: list[float]) -> list[tuple[str, int]]:
    """Calls per round-trip bucket (ms)."""
    counts = [0] * (len(EDGES_MS) + 1)
    for x in rtts:
        ms = x * 1000
        counts[next((k for k, e in enumerate(EDGES_MS) if ms < e), len(EDGES_MS))] += 1
    labels = [f"< {EDGES_MS[0]}"] + [f"{a}-{b}" for a, b in zip(EDGES_MS, EDGES_MS[1:], strict=False)]
    return list(zip([*labels, f">= {EDGES_MS[-1]}"], counts, strict=True))


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def start_server(config: str, bootstrap: str, port: int, workdir: Path, before: Path | None) -> subprocess.Popen[bytes]:
    if config == "echo":
        return subprocess.Popen([sys.executable, "-c", ECHO, str(port)])
    args = [sys.executable, "-m", "twin", "gateway", "-b", bootstrap, "--port", str(port),
            "--spool", str(workdir / "spool")] + (["--no-capture"] if config == "no-capture" else [])  # fmt: skip
    env = dict(os.environ)
    if config == "before":  # the gateway as it was: that tree's package ahead of this one
        assert before is not None
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(before / "src"), env.get("PYTHONPATH")]))
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(workdir / "gateway.log", "ab"), env=env)  # noqa: SIM115


def run_once(stations: int, seconds: float, rate: float | None, config: str, workdir: Path,
             before: Path | None = None) -> dict[str, Any]:  # fmt: skip
    port = free_port()
    with EmbeddedBroker(port, log=workdir / "tansu.log") as broker:
        settings = Settings(bootstrap=broker.bootstrap, partitions=4)
        ensure_topics(settings, broker.bootstrap)
        gw_port = free_port()
        server = start_server(config, broker.bootstrap, gw_port, workdir, before)
        try:
            deadline = time.time() + 30
            while time.time() < deadline:
                try:
                    with __import__("socket").create_connection(("127.0.0.1", gw_port), 0.2):
                        break
                except OSError:
                    time.sleep(0.2)
            time.sleep(1.0)  # the gateway's collector tuned after start-up
            assert broker.process is not None
            rss0 = rss_bytes(server.pid)
            load = Load(f"ws://127.0.0.1:{gw_port}/ocpp", stations, seconds, rate, server.pid)
            cpu0 = {"server": cpu_seconds(server.pid), "broker": cpu_seconds(broker.process.pid)}
            me0, busy0 = time.process_time(), busy_seconds()
            t0 = time.perf_counter()
            gc.disable()  # the load generator's own pauses are not the gateway's latency
            try:
                asyncio.run(load.run())
            finally:
                gc.enable()
            wall = time.perf_counter() - t0
            cpu = {
                "server": cpu_seconds(server.pid) - cpu0["server"],
                "broker": cpu_seconds(broker.process.pid) - cpu0["broker"],
                "loadgen": time.process_time() - me0,
            }
            cpu["others"] = busy_seconds() - busy0 - sum(cpu.values())  # other people's work on the machine
            rss1 = rss_bytes(server.pid)
        finally:
            server.terminate()
            server.wait(10)
    frames = 2 * load.calls
    return {
        "frames_per_s": frames / seconds,
        "calls": load.calls,
        "errors": load.errors,
        "rtt_p50_ms": pct(load.rtts, 0.50) * 1000,
        "rtt_p99_ms": pct(load.rtts, 0.99) * 1000,
        "rtt_p999_ms": pct(load.rtts, 0.999) * 1000,
        "server_cpu_us_per_frame": cpu["server"] / max(1, frames) * 1e6,
        # the same over the calls alone, without the 1,000 connects, boots and closes
        "server_cpu_us_per_frame_calls": (load.server_cpu[-1] - load.server_cpu[0]) / max(1, frames) * 1e6,
        "rss_per_connection_kib": (rss1 - rss0) / stations / 1024,
        "cpu_share": {k: round(v / wall, 2) for k, v in cpu.items()},  # cores busy, over the whole run
        "histogram": histogram(load.rtts),
    }


def _median(each: list[dict[str, Any]]) -> dict[str, Any]:
    """Per figure, the median over repeated runs; histograms summed."""
    out: dict[str, Any] = {}
    for key, value in each[0].items():
        if key == "histogram":
            out[key] = [(label, sum(r[key][k][1] for r in each)) for k, (label, _) in enumerate(value)]
        elif isinstance(value, dict):
            out[key] = {k: round(statistics.median(r[key][k] for r in each), 2) for k in value}
        else:
            out[key] = round(statistics.median(r[key] for r in each), 2)
    return out


def show_histogram(rows: list[tuple[str, int]]) -> str:
    total = sum(c for _, c in rows) or 1
    return "\n".join(f"    {label:>10} ms {c:7d} {'#' * round(60 * c / total)}" for label, c in rows if c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=float, default=4000, help="offered frames/s in the paced phase")
    parser.add_argument("--phases", default="saturate,paced", help="which phases to run")
    parser.add_argument("--configs", default="echo,gateway",
                        help="servers, each round in this order: echo, gateway, no-capture, before")  # fmt: skip
    parser.add_argument(
        "--before", type=Path, help="a checkout of twin as it was (`git worktree add`): config 'before'"
    )
    parser.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported, ratios paired by round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configs = args.configs.split(",")
    if "before" in configs and args.before is None:
        parser.error("config 'before' needs --before DIR")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for phase, rate in (("saturate", None), ("paced", args.rate)):
            if phase not in args.phases.split(","):
                continue
            for i in range(args.repeat):
                for config in configs:  # alternate, so drift in the machine hits each alike
                    name = f"{phase}/{config}"
                    print(f"running {name} ({i + 1}/{args.repeat}) ...", file=sys.stderr, flush=True)
                    runs.setdefault(name, []).append(
                        run_once(args.stations, args.seconds, rate, config, Path(tmp), args.before)
                    )
    results = {name: _median(each) for name, each in runs.items()}
    paired: dict[str, list[float]] = {}  # each config against echo in the same round
    for name, each in runs.items():  # and each config's CPU a frame over the calls, round by round
        paired[f"{name.replace('/', ' ')} CPU us/frame (calls)"] = [
            round(r["server_cpu_us_per_frame_calls"], 1) for r in each
        ]
    for config in configs:
        if config == "echo":
            continue
        sat, floor = runs.get(f"saturate/{config}", []), runs.get("saturate/echo", [])
        if sat and floor:
            paired[f"saturate {config} / echo, frames/s"] = [
                round(a["frames_per_s"] / b["frames_per_s"], 2) for a, b in zip(sat, floor, strict=True)
            ]
        paced, floor = runs.get(f"paced/{config}", []), runs.get("paced/echo", [])
        if paced and floor:
            paired[f"paced {config} - echo, p99 ms"] = [
                round(a["rtt_p99_ms"] - b["rtt_p99_ms"], 1) for a, b in zip(paced, floor, strict=True)
            ]
    summary = {
        "stations": args.stations, "seconds": args.seconds, "repeat": args.repeat, "paced_rate": args.rate,
        "paired_by_round": paired,
        "paired_median": {k: round(statistics.median(v), 2) for k, v in paired.items()},
        "runs": results,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    for name, run in results.items():
        figures = {k: v for k, v in run.items() if k != "histogram"}
        print(f"{name:22} {json.dumps(figures)}")
        if name.startswith("paced/"):
            print(show_histogram(run["histogram"]))
    for key, values in paired.items():
        print(f"{key:40} {values} median {summary['paired_median'][key]}")


if __name__ == "__main__":
    main()
