"""What TLS through the gateway's terminator costs: profile 3 (mutual TLS, pyOpenSSL, the
relay over loopback) against profile 0 (plain ws), in the same run.

Two loads on each: 20 stations sending paced Heartbeats (about 5 a second each: the round
trip a station feels, p50 and p99), and one station sending Heartbeats back to back (the
most one connection carries, calls a second). Broker (embedded Tansu), gateway
(``python -m twin gateway``, capture on) and this load generator share the machine.

    .venv/bin/python benches/tls.py [--stations 20] [--seconds 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

from hostile import gateway, good_station, latency  # benches/ is on the path when a bench runs

from twin import pki
from twin.broker import EmbeddedBroker, ensure_topics, free_port


def client(root: Path, station: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(root / "ca.pem"))
    context.load_cert_chain(root / "stations" / f"{station}.pem", root / "stations" / f"{station}.key")
    return context


async def measure(url: str, root: Path | None, stations: int, seconds: float) -> dict[str, Any]:
    names = [f"TLS-{i:03d}" for i in range(stations)]
    until = time.monotonic() + seconds
    rtts: list[float] = []
    await asyncio.gather(*(good_station(url, n, until, rtts, client(root, n) if root else None) for n in names))
    until = time.monotonic() + seconds
    calls = await good_station(url, names[0], until, [], client(root, names[0]) if root else None, paced=False)
    return {**latency(rtts), "one_station_calls_per_s": round(calls / seconds)}


def run(broker: str, tmp: Path, root: Path | None, stations: int, seconds: float) -> dict[str, Any]:
    security = ["--security-profile", "3", "--pki", str(root)] if root else []
    no_limit = {"TWIN_STATION_RATE": "0"}  # the back-to-back station measures TLS, not the rate limiter
    with gateway(broker, "tls.", tmp / "spool", *security, env=no_limit) as (port, _):
        url = f"{'wss' if root else 'ws'}://127.0.0.1:{port}/ocpp"
        return asyncio.run(measure(url, root, stations, seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from twin.settings import Settings

    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port()) as broker:
        ensure_topics(Settings(bootstrap=broker.bootstrap, topic_prefix="tls."), broker.bootstrap)
        root = Path(tmp) / "pki"
        pki.init(root, [f"TLS-{i:03d}" for i in range(args.stations)])
        plain = run(broker.bootstrap, Path(tmp), None, args.stations, args.seconds)
        mutual = run(broker.bootstrap, Path(tmp), root, args.stations, args.seconds)
    result = {"ws": plain, "wss_profile_3": mutual,
              "p50_ratio": round(mutual["p50_ms"] / plain["p50_ms"], 2),
              "p99_ratio": round(mutual["p99_ms"] / plain["p99_ms"], 2),
              "one_station_ratio": round(mutual["one_station_calls_per_s"]
                                         / plain["one_station_calls_per_s"], 2)}  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for name in ("ws", "wss_profile_3"):
        r = result[name]
        print(f"{name:<14} {r['calls']:>6} paced calls   p50 {r['p50_ms']:>6.2f} ms   p99 {r['p99_ms']:>6.2f} ms   "
              f"one station back to back: {r['one_station_calls_per_s']:>5} calls/s")  # fmt: skip
    print(f"profile 3 / ws: p50 {result['p50_ratio']}x, p99 {result['p99_ratio']}x, "
          f"one station's calls/s {result['one_station_ratio']}x")  # fmt: skip


if __name__ == "__main__":
    main()
