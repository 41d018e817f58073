"""Other stations' round trips while one station attacks the gateway.

20 well-behaved stations send a paced mix of calls (each about 5 per second) and time every
round trip. First alone (the baseline), then during an attack from other connections at
once: a flood of Heartbeats as fast as one socket carries them, random bytes, frames over
the size limit, deep nesting, and connect/disconnect churn. Target: the well-behaved
stations' p99 during the attack within 2x the baseline.

Broker (embedded Tansu), gateway (``python -m twin gateway``, capture on) and this load
generator share the machine.

    .venv/bin/python benches/hostile.py [--stations 20] [--seconds 15] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import websockets

from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.settings import Settings

BOOT = {"reason": "PowerUp", "chargingStation": {"model": "Bench", "vendorName": "twin"}}


async def good_station(url: str, name: str, until: float, rtts: list[float], tls: ssl.SSLContext | None = None,
                       paced: bool = True) -> int:  # fmt: skip
    """Boot, then Heartbeats until ``until`` (every 0.1-0.3 s, or back to back), each round
    trip in ms appended to ``rtts``; how many were sent. Also used by ``benches/tls.py``."""
    async with websockets.connect(f"{url}/{name}", subprotocols=["ocpp2.1"], ssl=tls,  # type: ignore[list-item]
                                  server_hostname="localhost" if tls else None) as ws:  # fmt: skip
        await ws.send(orjson.dumps([2, "b", "BootNotification", BOOT]).decode())
        await ws.recv()
        n = 0
        while time.monotonic() < until:
            n += 1
            began = time.perf_counter()
            await ws.send(orjson.dumps([2, f"h{n}", "Heartbeat", {}]).decode())
            await ws.recv()
            rtts.append((time.perf_counter() - began) * 1000)
            if paced:
                await asyncio.sleep(random.uniform(0.1, 0.3))
        return n


async def flooder(url: str, until: float, counts: dict[str, int]) -> None:
    async with websockets.connect(f"{url}/ATTACK-FLOOD", subprotocols=["ocpp2.1"], max_queue=None) as ws:  # type: ignore[list-item]
        n = 0
        while time.monotonic() < until:
            n += 1
            await ws.send(orjson.dumps([2, f"f{n}", "Heartbeat", {}]).decode())
            counts["flood"] += 1
            if n % 100 == 0:
                await asyncio.sleep(0)


async def garbage(url: str, until: float, counts: dict[str, int]) -> None:
    kinds = [
        ("random bytes", lambda: os.urandom(random.randint(1, 2000))),
        ("oversized", lambda: '[2,"x","Heartbeat",{"a":"' + "a" * 70_000 + '"}]'),
        ("deep nesting", lambda: "[" * 50_000 + "]" * 50_000),
        ("unknown action", lambda: orjson.dumps([2, "u", "NoSuchAction", {}]).decode()),
    ]
    while time.monotonic() < until:
        name, make = random.choice(kinds)
        with contextlib.suppress(Exception):
            async with websockets.connect(f"{url}/ATTACK-GARBAGE", subprotocols=["ocpp2.1"]) as ws:  # type: ignore[list-item]
                for _ in range(20):
                    await ws.send(make())
                    counts[name] = counts.get(name, 0) + 1
                counts["reconnects"] = counts.get("reconnects", 0) + 1


async def attackers(url: str, seconds: float) -> dict[str, int]:
    until = time.monotonic() + seconds
    counts: dict[str, int] = {"flood": 0}
    await asyncio.gather(flooder(url, until, counts), garbage(url, until, counts), garbage(url, until, counts))
    return counts


def attack_process(url: str, seconds: float, out: Any) -> None:
    out.put(asyncio.run(attackers(url, seconds)))


async def phase(url: str, stations: int, seconds: float, attack: bool) -> dict[str, Any]:
    """The well-behaved stations' round trips; with ``attack``, while another process (so
    that its sending does not slow this one's clock) attacks."""
    import multiprocessing

    until = time.monotonic() + seconds
    rtts: list[float] = []
    counts: dict[str, int] | None = None
    if attack:
        queue: Any = multiprocessing.Queue()
        process = multiprocessing.Process(target=attack_process, args=(url, seconds, queue))
        process.start()
    await asyncio.gather(*(good_station(url, f"GOOD-{i:03d}", until, rtts) for i in range(stations)))
    if attack:
        counts = queue.get(timeout=60)
        process.join(30)
    return {**latency(rtts), "attack": counts}


def latency(rtts: list[float]) -> dict[str, Any]:
    """How many round trips, and their p50 and p99 in ms. Also used by ``benches/tls.py``."""
    ordered = sorted(rtts)
    return {"calls": len(ordered), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2)}  # fmt: skip


@contextlib.contextmanager
def gateway(bootstrap: str, prefix: str, spool: Path, *options: str,
            env: dict[str, str] | None = None) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:  # fmt: skip
    """A ``python -m twin gateway`` process (capture on) on a free port, given 4 s to start;
    (its port, the process), stopped by its process id. Also used by ``benches/tls.py``."""
    port = free_port()
    environment = {**os.environ, "TWIN_TOPIC_PREFIX": prefix, "TWIN_SPOOL": str(spool), **(env or {})}
    command = [sys.executable, "-m", "twin", "gateway", "--bootstrap", bootstrap, "--port", str(port), *options]
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(4)
        yield port, process
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port()) as broker:
        settings = Settings(bootstrap=broker.bootstrap, topic_prefix="hostile.")
        ensure_topics(settings, broker.bootstrap)
        with gateway(broker.bootstrap, "hostile.", Path(tmp) / "spool") as (port, gw):
            url = f"ws://127.0.0.1:{port}/ocpp"
            base = asyncio.run(phase(url, args.stations, args.seconds, attack=False))
            hit = asyncio.run(phase(url, args.stations, args.seconds, attack=True))
            alive = gw.poll() is None
    result = {"baseline": base, "attack": hit, "gateway_alive": alive,
              "p99_ratio": round(hit["p99_ms"] / base["p99_ms"], 2),
              "p50_ratio": round(hit["p50_ms"] / base["p50_ms"], 2)}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in ("baseline", "attack"):
            r = result[name]
            print(f"{name:<9} {r['calls']:>6} calls   p50 {r['p50_ms']:>7.2f} ms   p99 {r['p99_ms']:>7.2f} ms")
        print(f"attack: {hit['attack']}")
        print(f"p99 under attack / baseline: {result['p99_ratio']}x (target <= 2x); p50 {result['p50_ratio']}x; "
              f"gateway alive: {alive}")  # fmt: skip


if __name__ == "__main__":
    main()
