"""Twin freshness under load: from a frame's capture (its envelope ``ts``) to the twin that
folded it appearing on ``twin.state``, at a paced 2,000 frames/s from 200 stations.

Baseline in the same run: the same consumer's delay for the frames themselves on
``ocpp.frames`` (capture to readable), so the difference is what the worker adds.
Broker, gateway (``twin gateway``), worker (``twin worker``) and load share the 2 cores.

    .venv/bin/python benches/freshness.py [--rate 2000] [--stations 200] [--seconds 20] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from kafka import KafkaConsumer

sys.path.insert(0, str(Path(__file__).parent))
from gateway import Load  # noqa: E402

from twin.broker import EmbeddedBroker, ensure_topics, free_port  # noqa: E402
from twin.envelope import parse_ts  # noqa: E402
from twin.settings import Settings  # noqa: E402


def watch(bootstrap: str, topic: str, delays: list[float], stop: threading.Event) -> None:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", fetch_max_wait_ms=10)
    while not stop.is_set():
        for batch in consumer.poll(timeout_ms=100).values():
            now = time.time()
            for message in batch:
                record = orjson.loads(message.value)
                stamp = record.get("as_of") or record.get("ts")
                if stamp and record.get("station_id", "").startswith("BENCH"):
                    delays.append(now - parse_ts(stamp).timestamp())
    consumer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] * 1000 if len(values) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--stations", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), log=Path(tmp) / "tansu.log") as broker:
        settings = Settings(partitions=4)
        ensure_topics(settings, broker.bootstrap)
        gw_port, web_port = free_port(), free_port()
        env = {**os.environ, "TWIN_PARTITIONS": "4"}
        twin = [sys.executable, "-m", "twin"]
        logs = [open(f"{tmp}/{name}.log", "wb") for name in ("gateway", "worker")]  # noqa: SIM115
        gateway = ["gateway", "-b", broker.bootstrap, "--port", str(gw_port), "--spool", f"{tmp}/spool"]
        worker = ["worker", "-b", broker.bootstrap, "--web-port", str(web_port), "--data-dir", f"{tmp}/w"]
        procs = [
            subprocess.Popen(twin + args, stdout=subprocess.DEVNULL, stderr=log, env=env)
            for args, log in ((gateway, logs[0]), (worker, logs[1]))
        ]
        try:
            deadline = time.time() + 120
            while time.time() < deadline:  # the worker folds and serves: ready
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/v1/fleet/summary", timeout=2):
                        break
                except Exception:
                    time.sleep(0.5)
            time.sleep(3)
            stop = threading.Event()
            state_delays: list[float] = []
            frame_delays: list[float] = []
            watched = ((settings.topics.state, state_delays), (settings.topics.frames, frame_delays))
            watchers = [
                threading.Thread(target=watch, args=(broker.bootstrap, t, d, stop), daemon=True) for t, d in watched
            ]
            for w in watchers:
                w.start()
            time.sleep(2)
            load = Load(f"ws://127.0.0.1:{gw_port}/ocpp", args.stations, args.seconds, args.rate)
            asyncio.run(load.run())
            time.sleep(3)  # let the tail drain
            stop.set()
            for w in watchers:
                w.join(5)
            cpu = {"gateway": cpu_seconds(procs[0].pid), "worker": cpu_seconds(procs[1].pid)}
            cpu["broker"] = cpu_seconds(broker.process.pid) if broker.process else 0.0
        finally:
            for p in procs:
                p.terminate()
                p.wait(15)
    result = {
        "offered_frames_per_s": args.rate,
        "frames_per_s_sent": round(2 * load.calls / args.seconds),
        "twin_updates_seen": len(state_delays),
        "freshness_p50_ms": round(pct(state_delays, 0.5), 1),
        "freshness_p99_ms": round(pct(state_delays, 0.99), 1),
        "frames_visible_p50_ms": round(pct(frame_delays, 0.5), 1),
        "frames_visible_p99_ms": round(pct(frame_delays, 0.99), 1),
        **{f"cpu_s_{name}": seconds for name, seconds in cpu.items()},
    }
    print(json.dumps(result, indent=2) if args.json else "\n".join(f"{k:26} {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
