"""Scale-out benchmark: captured frames/s with 1 and 2 gateway processes on one port
(``twin gateway --processes N``, SO_REUSEPORT), the same load, in one run, on Apache Kafka
and on Tansu; and the same load against a bare websockets echo server in 1 and 2 processes,
which shows how far this machine lets anything scale (on 2 cores shared with the broker and
the load generator, and with other people's work, not far).

The load: ``--stations`` stations, each sending its next CALL (the realistic mix of
``benches/gateway.py``) as soon as the last is answered, for ``--seconds``, from
``--loadgen`` processes. Each CALL and its answer are two frames. CPU seconds per process
during the window (``/proc``) say what bounds each run. Configurations alternate within each
of ``--repeat`` rounds, so drift in the machine hits them all; medians are reported.

    .venv/bin/python benches/scale.py [--stations 1000] [--seconds 10] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import multiprocessing
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import websockets  # noqa: E402
from gateway import BOOT, ECHO, Load, cpu_seconds  # noqa: E402  (benches/gateway.py: the mix, the floor, /proc)

from twin import runtime  # noqa: E402
from twin.broker import EmbeddedBroker, KafkaBroker, ensure_topics, free_port  # noqa: E402
from twin.settings import Settings  # noqa: E402


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {port}")


def _load(url: str, stations: int, seconds: float, first: int, out: Any, go: Any) -> None:
    """One load generator process: stations ``P<first>-<i>``, each a closed loop of CALLs,
    from ``go`` (every generator's stations connected) for ``seconds``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gc.disable()  # its pauses are not the gateway's
    calls, errors, cpu = asyncio.run(_stations(url, [f"P{first}-{i:05d}" for i in range(stations)], seconds,
                                               out, go))  # fmt: skip
    out.put((calls, errors, cpu))


async def _stations(url: str, names: list[str], seconds: float, out: Any, go: Any) -> tuple[int, int, float]:
    plan = Load(url, 1, seconds, None).plan  # the realistic mix of benches/gateway.py
    connected, handshakes = asyncio.Event(), asyncio.Semaphore(50)
    opened, window, counts = [0], [0.0, 0.0], [0, 0]

    async def start() -> None:
        await connected.wait()
        out.put("ready")
        await asyncio.to_thread(go.wait)
        window[:] = [time.monotonic(), time.monotonic() + seconds]
        counting.set()

    counting = asyncio.Event()
    starter = asyncio.ensure_future(start())

    async def station(k: int, name: str) -> None:
        async with handshakes:
            ws = await websockets.connect(f"{url}/{name}", subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                                          compression=None, ping_interval=None, open_timeout=120)  # fmt: skip
        try:
            await ws.send(json.dumps([2, "boot", "BootNotification", BOOT]))
            await ws.recv()
            opened[0] += 1
            if opened[0] == len(names):
                connected.set()
            await counting.wait()
            n = 0
            while time.monotonic() < window[1]:
                action, payload = plan[(k + n) % len(plan)]
                n += 1
                await ws.send(json.dumps([2, str(n), action, payload]))
                answer = await ws.recv()
                counts[0] += 1
                counts[1] += not str(answer).startswith("[3")
        finally:
            await ws.close()

    cpu0 = [0.0]

    async def clock() -> None:
        await counting.wait()
        cpu0[0] = time.process_time()

    clocking = asyncio.ensure_future(clock())
    await asyncio.gather(*(station(k, name) for k, name in enumerate(names)))
    await starter
    await clocking
    return counts[0], counts[1], time.process_time() - cpu0[0]


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # less idle and iowait


def measure(url: str, stations: int, seconds: float, loadgens: int, pids: dict[str, list[int]]) -> dict[str, Any]:
    context = multiprocessing.get_context("fork")
    queue: Any = context.Queue()
    go = context.Event()
    share = [stations // loadgens + (i < stations % loadgens) for i in range(loadgens)]
    procs = [context.Process(target=_load, args=(url, n, seconds, i, queue, go)) for i, n in enumerate(share)]
    for p in procs:
        p.start()
    assert all(queue.get(timeout=300) == "ready" for _ in procs), "every station connected and booted"
    cpu0 = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
    busy0, t0 = busy_seconds(), time.monotonic()
    go.set()  # the window: CPU per process and the machine's, over it alone
    time.sleep(seconds)
    cpu = {name: sum(cpu_seconds(p) for p in ps) - cpu0[name] for name, ps in pids.items()}
    busy, wall = busy_seconds() - busy0, time.monotonic() - t0
    results = [queue.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(60)
    cpu["loadgen"] = sum(r[2] for r in results)
    cpu["others"] = busy - sum(cpu.values())  # everything else on the machine: other people's work
    calls = sum(r[0] for r in results)
    return {
        "frames_per_s": round(2 * calls / seconds),
        "errors": sum(r[1] for r in results),
        "cpu_share": {k: round(v / wall, 2) for k, v in cpu.items()},  # cores busy during the window
    }


def run_gateway(bootstrap: str, broker_pid: int, processes: int, args: argparse.Namespace, work: Path,
                prefix: str) -> dict[str, Any]:  # fmt: skip
    port = free_port()
    env = {**os.environ, "TWIN_TOPIC_PREFIX": prefix, "TWIN_PARTITIONS": "4"}
    argv = [sys.executable, "-m", "twin", "gateway", "-b", bootstrap, "--port", str(port),
            "--processes", str(processes), "--spool", str(work / "spool")]  # fmt: skip
    with open(work / "gateway.log", "ab") as log:
        parent = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        wait_port(port)
        time.sleep(2)  # every process bound and its consumers started
        gateways = children(parent.pid) if processes > 1 else [parent.pid]
        assert len(gateways) == processes, gateways
        return measure(f"ws://127.0.0.1:{port}/ocpp", args.stations, args.seconds, args.loadgen,
                       {"gateways": gateways, "broker": [broker_pid]})  # fmt: skip
    finally:
        runtime.stop(parent, signal.SIGTERM, 30)


def run_echo(processes: int, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    servers = [subprocess.Popen([sys.executable, "-c", ECHO, str(port)]) for _ in range(processes)]
    try:
        wait_port(port)
        time.sleep(0.5)
        return measure(f"ws://127.0.0.1:{port}/ocpp", args.stations, args.seconds, args.loadgen,
                       {"servers": [s.pid for s in servers]})  # fmt: skip
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(10)


def median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "frames_per_s": round(statistics.median(r["frames_per_s"] for r in runs)),
        "each": [r["frames_per_s"] for r in runs],
        "errors": sum(r["errors"] for r in runs),
        "cpu_share": {k: round(statistics.median(r["cpu_share"][k] for r in runs), 2) for k in runs[0]["cpu_share"]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--loadgen", type=int, default=2, help="load generator processes")
    parser.add_argument("--engines", default="kafka,tansu")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    runs: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        brokers: dict[str, Any] = {}
        try:
            for engine in args.engines.split(","):
                port = free_port()
                broker = KafkaBroker(port, work / "kafka") if engine == "kafka" else \
                    EmbeddedBroker(port, log=work / "tansu.log")  # fmt: skip
                brokers[engine] = broker.start()
                ensure_topics(Settings(bootstrap=broker.bootstrap, partitions=4), broker.bootstrap)
            for i in range(args.repeat):
                for processes in (1, 2):
                    name = f"echo/{processes}"
                    print(f"round {i + 1}: {name}", file=sys.stderr, flush=True)
                    runs.setdefault(name, []).append(run_echo(processes, args))
                    for engine, broker in brokers.items():
                        name = f"{engine}/{processes}"
                        print(f"round {i + 1}: {name}", file=sys.stderr, flush=True)
                        runs.setdefault(name, []).append(
                            run_gateway(broker.bootstrap, broker.process.pid, processes, args, work, "")
                        )
        finally:
            for broker in brokers.values():
                broker.stop()
    results = {name: median(each) for name, each in runs.items()}

    def ratio(what: str) -> float | None:
        one, two = results.get(f"{what}/1"), results.get(f"{what}/2")
        return round(two["frames_per_s"] / one["frames_per_s"], 2) if one and two else None

    summary = {
        "stations": args.stations, "seconds": args.seconds, "repeat": args.repeat, "loadgen": args.loadgen,
        "cores": os.cpu_count(),
        "scaling_2_over_1": {what: ratio(what) for what in ("echo", *brokers)},
        "runs": results,
    }  # fmt: skip
    for what in brokers:
        r, e = summary["scaling_2_over_1"][what], summary["scaling_2_over_1"]["echo"]
        summary["scaling_2_over_1"][f"{what}_vs_echo"] = round(r / e, 2) if r and e else None
    # the same ratios within each round (its runs a minute apart), which drift between rounds spares
    paired: dict[str, list[float]] = {}
    for what in ("echo", *brokers):
        paired[what] = [round(b["frames_per_s"] / a["frames_per_s"], 2)
                        for a, b in zip(runs[f"{what}/1"], runs[f"{what}/2"], strict=True)]  # fmt: skip
    for what in brokers:
        paired[f"{what}_vs_echo"] = [round(r / e, 2) for r, e in zip(paired[what], paired["echo"], strict=True)]
    summary["paired_by_round"] = paired
    summary["paired_median"] = {k: round(statistics.median(v), 2) for k, v in paired.items()}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for name, result in results.items():
            print(f"{name:10} {json.dumps(result)}")
        print("2 processes / 1:", json.dumps(summary["scaling_2_over_1"]))
        print("by round:", json.dumps(summary["paired_by_round"]), "medians", json.dumps(summary["paired_median"]))


if __name__ == "__main__":
    main()
