"""Connections benchmark: many concurrent stations on ONE gateway process, capturing into
the embedded broker, through the gateway's start-up, a steady window and a mass reconnect.

Each station boots (BootNotification), heartbeats every ``--heartbeat`` s (first one at a
random moment in the first interval), and one in ``--tx-every`` is in a transaction sending
a TransactionEvent with meter values every ``--meter`` s. Phases, timed by this process:

1. start-up: ``twin gateway`` from its launch until its port accepts;
2. ramp: every station connects and boots (``--handshakes`` handshakes in flight per load
   generator process);
3. steady: ``--seconds`` of heartbeats and meter values; the gateway's RSS growth over its
   start-up RSS, divided by the stations, is the memory per connection;
4. blip: every load generator aborts all its connections at once (TCP reset, no close
   handshake, as a network blip looks to the gateway) and every station reconnects at once
   and boots again;
5. after: ``--after`` seconds of steady load again; then every station closes. The RSS is
   read as every station is back (``kib_per_connection_after_blip``) and at the end of this
   window (``kib_per_connection_after``).

Every CALL is answered or counted as unanswered (``--call-timeout``); what the gateway
captured is read back as the end offsets of ``ocpp.frames`` (a fresh broker each run) and
compared with what it must hold: two frames per answered call and a ``Connected`` and a
``Disconnected`` record per connection. Round trips are reported per phase with a text
histogram; CPU per process and the machine's other busy time per phase (``/proc``) show
what bounds it.

The load comes from ``--loadgen`` processes, each station from a loopback source address of
its own range (127.0.0.2, 127.0.0.3, ...: ``--per-address`` stations each, under the
~28,000 ephemeral ports of one address); the open-files limit is raised for every process
(as root, past the hard limit up to ``fs.nr_open``; else to the hard limit). One connection
is one file of the gateway process: where the hard limit cannot be raised (a root without
CAP_SYS_RESOURCE, as in a container) it bounds the stations one process can hold, and a mass
reconnect needs room for the old sockets beside the new ones (about half the limit).

    .venv/bin/python benches/connections.py --stations 50000 [--seconds 120] [--json]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import gc
import json
import multiprocessing
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).parent))
import websockets  # noqa: E402
from gateway import BOOT, TX, cpu_seconds, rss_bytes  # noqa: E402  (benches/gateway.py)

from twin import runtime  # noqa: E402
from twin.broker import EmbeddedBroker, ensure_topics, free_port  # noqa: E402
from twin.settings import Settings  # noqa: E402

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux
PHASES = ("ramp", "steady", "blip", "after")
STARTED = {**TX, "eventType": "Started", "triggerReason": "Authorized", "seqNo": 0,
           "idToken": {"idToken": "TAG", "type": "ISO14443"}}  # fmt: skip


def raise_nofile(wanted: int) -> int:
    """Open-files limit for this process and its children: ``wanted`` if root may raise the
    hard limit that far (``fs.nr_open``), else the hard limit. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if wanted > hard:
        try:
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, ceiling), min(wanted, ceiling)))
            return min(wanted, ceiling)
        except (OSError, ValueError):
            pass
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every process, every core)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


# -- a load generator process ------------------------------------------------------------------
class Fleet:
    """One process's stations."""

    def __init__(self, url: str, first: int, count: int, args: argparse.Namespace, phase: Any) -> None:
        self.url, self.first, self.count, self.args, self.phase = url, first, count, args, phase
        where = urlsplit(url)
        self.host, self.port = where.hostname or "127.0.0.1", where.port or 80
        self.rtts: dict[int, array.array[float]] = {i: array.array("f") for i in range(len(PHASES))}
        self.sent = self.answered = self.errors = self.unanswered = self.connections = self.failed_connects = 0
        self.up = self.dropped = 0
        self.open: set[Any] = set()
        self.all_up = asyncio.Event()
        self.blip: asyncio.Future[None] | None = None
        self.stopping: asyncio.Future[None] | None = None
        self.handshakes = asyncio.Semaphore(args.handshakes)

    def source(self, i: int) -> str:
        return f"127.0.0.{2 + i // self.args.per_address}"

    async def connect_from(self, source: str) -> socket.socket:
        """A TCP connection to the gateway from ``source``. The port is chosen at connect
        (IP_BIND_ADDRESS_NO_PORT), unique per source, destination and port: a plain bind to
        port 0 would take the port from the machine's whole ephemeral range, which every other
        program connecting from 127.0.0.1 shares."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def call(self, ws: Any, msg_id: str, action: str, payload: dict[str, Any]) -> None:
        phase = self.phase.value
        self.sent += 1
        t0 = time.perf_counter()
        await ws.send(json.dumps([2, msg_id, action, payload]))
        try:
            answer = await asyncio.wait_for(ws.recv(), self.args.call_timeout)
        except TimeoutError:
            self.unanswered += 1
            raise
        self.rtts[phase].append(time.perf_counter() - t0)
        self.answered += 1
        if not str(answer).startswith("[3"):
            self.errors += 1

    async def station(self, i: int) -> None:
        name = f"CONN-{i:06d}"
        rng = random.Random(i)
        tx = i % self.args.tx_every == 0
        while True:
            assert self.blip is not None and self.stopping is not None
            if self.stopping.done():
                return
            blip = self.blip
            try:
                async with self.handshakes:
                    sock = await self.connect_from(self.source(i))
                    ws = await websockets.connect(
                        f"{self.url}/{name}", subprotocols=["ocpp2.1"],  # type: ignore[list-item]
                        compression=None, ping_interval=None, open_timeout=self.args.open_timeout,
                        close_timeout=5, sock=sock,
                    )  # fmt: skip
            except (OSError, TimeoutError, websockets.exceptions.InvalidHandshake):
                self.failed_connects += 1
                await asyncio.sleep(1 + rng.random())
                continue
            self.connections += 1
            self.open.add(ws)
            n, is_up = 0, False
            try:
                n += 1
                await self.call(ws, f"b{n}", "BootNotification", BOOT)
                if tx:
                    n += 1
                    await self.call(ws, f"s{n}", "TransactionEvent", STARTED)
                self.up += 1
                is_up = True
                if self.up == self.count:
                    self.all_up.set()
                now = time.monotonic()
                beat = now + rng.random() * self.args.heartbeat
                meter = now + rng.random() * self.args.meter if tx else float("inf")
                while True:
                    due = min(beat, meter)
                    done, _ = await asyncio.wait((blip, self.stopping), timeout=max(0.0, due - time.monotonic()),
                                                 return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                    if done:
                        break
                    n += 1
                    if meter <= beat:
                        meter += self.args.meter
                        await self.call(ws, f"m{n}", "TransactionEvent", {**TX, "seqNo": n})
                    else:
                        beat += self.args.heartbeat
                        await self.call(ws, f"h{n}", "Heartbeat", {})
            except (websockets.exceptions.ConnectionClosed, TimeoutError, OSError):
                pass
            finally:
                self.up -= is_up
                self.open.discard(ws)
            if self.stopping.done():
                await ws.close()
                return
            if not blip.done():  # dropped for some other reason: back off a little, as a station does
                self.dropped += 1
                await asyncio.sleep(1 + rng.random())
            # else the blip dropped it: reconnect at once

    def trigger_blip(self) -> None:
        """Every connection dropped at once: a TCP reset, as the gateway sees a network blip."""
        assert self.blip is not None
        self.all_up.clear()
        blip, self.blip = self.blip, asyncio.get_running_loop().create_future()
        for ws in list(self.open):
            ws.transport.abort()
        blip.set_result(None)

    async def run(self, out: Any, go_blip: Any, go_stop: Any) -> None:
        loop = asyncio.get_running_loop()
        self.blip, self.stopping = loop.create_future(), loop.create_future()
        stations = [loop.create_task(self.station(i)) for i in range(self.first, self.first + self.count)]
        t0 = time.monotonic()
        await self.all_up.wait()
        out.put(("up", time.monotonic() - t0))
        if not self.args.no_blip:
            await asyncio.to_thread(go_blip.wait)
            t0 = time.monotonic()
            self.trigger_blip()
            await asyncio.sleep(0.5)
            await self.all_up.wait()
            out.put(("up", time.monotonic() - t0))
        await asyncio.to_thread(go_stop.wait)
        self.stopping.set_result(None)
        await asyncio.gather(*stations)


def _load(url: str, first: int, count: int, args: argparse.Namespace, phase: Any, out: Any, go_blip: Any,
          go_stop: Any) -> None:  # fmt: skip
    gc.disable()  # its pauses are not the gateway's
    fleet = Fleet(url, first, count, args, phase)
    cpu0 = time.process_time()
    asyncio.run(fleet.run(out, go_blip, go_stop))
    out.put(("done", {
        "sent": fleet.sent, "answered": fleet.answered, "errors": fleet.errors, "unanswered": fleet.unanswered,
        "connections": fleet.connections, "failed_connects": fleet.failed_connects, "dropped": fleet.dropped,
        "rtts": {PHASES[k]: v.tobytes() for k, v in fleet.rtts.items()}, "cpu": time.process_time() - cpu0,
    }))  # fmt: skip


# -- the run ---------------------------------------------------------------------------------
def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)
    at = lambda q: round(v[min(len(v) - 1, int(q * len(v)))] * 1000, 1)  # noqa: E731
    return {"n": len(v), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p999_ms": at(0.999),
            "max_ms": round(v[-1] * 1000, 1)}  # fmt: skip


EDGES_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000)


def histogram(values: list[float]) -> list[tuple[str, int]]:
    """Counts per round-trip bucket (ms), as text rows for RESULTS.md."""
    counts = [0] * (len(EDGES_MS) + 1)
    for x in values:
        ms = x * 1000
        counts[next((k for k, e in enumerate(EDGES_MS) if ms < e), len(EDGES_MS))] += 1
    labels = [f"< {EDGES_MS[0]}"] + [f"{a}-{b}" for a, b in zip(EDGES_MS, EDGES_MS[1:], strict=False)]
    labels.append(f">= {EDGES_MS[-1]}")
    return [(label, c) for label, c in zip(labels, counts, strict=True) if c]


def show_histogram(rows: list[tuple[str, int]]) -> str:
    total = sum(c for _, c in rows) or 1
    return "\n".join(f"  {label:>12} ms {c:8d} {'#' * max(1, round(50 * c / total)) if c else ''}" for label, c in rows)


async def captured(bootstrap: str, topic: str, must: int, within: float = 60) -> int:
    """Records on ``topic``, read from its start (Tansu's end offsets undercount: a partition's
    latest offset there can fall short of its last batch): until ``must`` are read, or nothing
    more comes for 3 s, or ``within`` seconds have passed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=10_000)
    await consumer.start()
    try:
        await consumer.topics()
        consumer.assign([TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()])
        await consumer.seek_to_beginning()
        count, quiet, deadline = 0, 0, time.monotonic() + within
        while time.monotonic() < deadline and quiet < 3 and not (count >= must and quiet):
            got = await consumer.getmany(timeout_ms=1000)
            n = sum(len(batch) for batch in got.values())
            count, quiet = count + n, (0 if n else quiet + 1)
        return count
    finally:
        await consumer.stop()


def wait_port(port: int, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return time.monotonic() - t0
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the gateway did not listen on {port} within {timeout} s")


class Meter:
    """CPU seconds per process and the machine's busy seconds between two marks."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.mark()

    def mark(self) -> None:
        self.t0, self.busy0 = time.monotonic(), busy_seconds()
        self.cpu0 = {k: cpu_seconds(p) for k, p in self.pids.items()}

    def read(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        cpu = {k: cpu_seconds(p) - self.cpu0[k] for k, p in self.pids.items()}
        cpu["rest of the machine"] = busy_seconds() - self.busy0 - sum(cpu.values())
        out = {k: round(v / wall, 2) for k, v in cpu.items()}
        self.mark()
        return out


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    limit = raise_nofile(args.stations + 10_000)
    if limit < args.stations + 200:  # the gateway's own: broker connections, spool, epoll, ...
        raise SystemExit(
            f"one gateway process can hold at most ~{limit - 200} connections here: its open-files limit is "
            f"{limit} (RLIMIT_NOFILE's hard limit; raising it needs CAP_SYS_RESOURCE). Run --stations {limit - 200}"
        )
    with EmbeddedBroker(free_port(), log=work / "tansu.log") as broker:
        settings = Settings(bootstrap=broker.bootstrap, partitions=4)
        ensure_topics(settings, broker.bootstrap)
        port = free_port()
        argv = [sys.executable, "-m", "twin", "gateway", "-b", broker.bootstrap, "--port", str(port),
                "--spool", str(work / "spool")]  # fmt: skip
        t0 = time.monotonic()
        with open(work / "gateway.log", "ab") as log:
            gateway = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log,
                                       env={**os.environ, "TWIN_PARTITIONS": "4"})  # fmt: skip
        try:
            wait_port(port, 60)
            startup = time.monotonic() - t0  # from the launch: imports, broker checks, schemas warmed
            time.sleep(1.0)  # its consumers joined, the collector tuned
            rss0 = rss_bytes(gateway.pid)
            assert broker.process is not None
            meter = Meter({"gateway": gateway.pid, "broker": broker.process.pid})
            context = multiprocessing.get_context("fork")
            phase, out = context.Value("i", 0, lock=False), context.Queue()
            go_blip, go_stop = context.Event(), context.Event()
            share = [args.stations // args.loadgen + (k < args.stations % args.loadgen) for k in range(args.loadgen)]
            firsts = [sum(share[:k]) for k in range(args.loadgen)]
            url = f"ws://127.0.0.1:{port}/ocpp"
            procs = [context.Process(target=_load, args=(url, f, n, args, phase, out, go_blip, go_stop))
                     for f, n in zip(firsts, share, strict=True)]  # fmt: skip
            t_ramp = time.monotonic()
            for p in procs:
                p.start()
            ramp_each = [out.get(timeout=args.phase_timeout)[1] for _ in procs]
            ramp = time.monotonic() - t_ramp
            cpu = {"ramp": meter.read()}
            rss_up = rss_bytes(gateway.pid)
            print(f"ramp: {args.stations} stations up in {ramp:.1f} s", file=sys.stderr, flush=True)
            phase.value = 1
            time.sleep(args.seconds)
            cpu["steady"] = meter.read()
            rss_steady = rss_bytes(gateway.pid)
            print(f"steady window done: gateway RSS {rss_steady / 2**20:.0f} MiB (start {rss0 / 2**20:.0f}), "
                  f"CPU {cpu['steady']}", file=sys.stderr, flush=True)  # fmt: skip
            reconnect, blip_each, rss_blip = float("nan"), [], rss_steady
            rss_after = rss_steady
            if not args.no_blip:
                phase.value = 2
                t_blip = time.monotonic()
                go_blip.set()
                blip_each = [out.get(timeout=args.phase_timeout)[1] for _ in procs]
                reconnect = time.monotonic() - t_blip
                cpu["blip"] = meter.read()
                rss_blip = rss_bytes(gateway.pid)
                print(f"blip: every station back in {reconnect:.1f} s", file=sys.stderr, flush=True)
                phase.value = 3
                time.sleep(args.after)
                cpu["after"] = meter.read()
                rss_after = rss_bytes(gateway.pid)
            go_stop.set()
            done = [out.get(timeout=args.phase_timeout)[1] for _ in procs]
            for p in procs:
                p.join(60)
            answered = sum(d["answered"] for d in done)
            must = 2 * answered + 2 * sum(d["connections"] for d in done)
            settle = time.monotonic()  # the gateway records the last Disconnected meanwhile
            frames = asyncio.run(captured(broker.bootstrap, settings.topics.frames, must))
            settled_s = time.monotonic() - settle
        finally:
            t_stop = time.monotonic()
            runtime.stop(gateway, signal.SIGTERM, 60)
            stop = time.monotonic() - t_stop
    total = {k: sum(d[k] for d in done) for k in ("sent", "answered", "errors", "unanswered", "connections",
                                                  "failed_connects", "dropped")}  # fmt: skip
    rtts: dict[str, list[float]] = {}
    for name in PHASES:
        values: list[float] = []
        for d in done:
            values.extend(array.array("f", d["rtts"][name]))
        rtts[name] = values
    log = (work / "gateway.log").read_text(errors="replace")
    expected_low = 2 * total["answered"] + 2 * total["connections"]
    expected_high = 2 * total["sent"] + 2 * total["connections"]
    every = [x for v in rtts.values() for x in v]
    return {
        "stations": args.stations, "loadgen": args.loadgen, "open_files_limit": limit,
        "startup_s": round(startup, 2), "stop_s": round(stop, 2),
        "ramp_s": round(ramp, 1), "ramp_connects_per_s": round(args.stations / ramp),
        "ramp_each_s": [round(x, 1) for x in ramp_each],
        "reconnect_s": round(reconnect, 1), "reconnect_each_s": [round(x, 1) for x in blip_each],
        "rss_start_mib": round(rss0 / 2**20), "rss_up_mib": round(rss_up / 2**20),
        "rss_steady_mib": round(rss_steady / 2**20), "rss_after_blip_mib": round(rss_blip / 2**20),
        "kib_per_connection": round((rss_steady - rss0) / args.stations / 1024, 1),
        "kib_per_connection_after_blip": round((rss_blip - rss0) / args.stations / 1024, 1),
        "kib_per_connection_after": round((rss_after - rss0) / args.stations / 1024, 1),
        **total,
        "captured": frames, "captured_read_in_s": round(settled_s, 1),
        "expected_captured": [expected_low, expected_high],
        "all_captured": expected_low <= frames <= expected_high,
        "gateway_spooled": "spooling to" in log,  # it took the broker for gone (acks later than capture_timeout)
        "gateway_out_of_files": log.count("Too many open files"),
        "rtt": {name: quantiles(v) for name, v in rtts.items()},
        "rtt_all": quantiles(every),
        "histogram": {name: histogram(v) for name, v in rtts.items()},
        "cpu_share": cpu,
        "loadgen_cpu_s": round(sum(d["cpu"] for d in done), 1),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=120, help="the steady window")
    parser.add_argument("--after", type=float, default=30, help="steady load after the mass reconnect")
    parser.add_argument("--heartbeat", type=float, default=60)
    parser.add_argument("--meter", type=float, default=10, help="meter values interval of a station in a transaction")
    parser.add_argument("--tx-every", type=int, default=20, help="one station in N is in a transaction")
    parser.add_argument("--loadgen", type=int, default=4, help="load generator processes")
    parser.add_argument("--per-address", type=int, default=10_000, help="stations per loopback source address")
    parser.add_argument("--handshakes", type=int, default=1000, help="handshakes in flight per load generator")
    parser.add_argument("--no-blip", action="store_true", help="no mass reconnect: ramp and steady only")
    parser.add_argument("--open-timeout", type=float, default=300)
    parser.add_argument("--call-timeout", type=float, default=60)
    parser.add_argument("--phase-timeout", type=float, default=900, help="give up on a phase after this long")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key not in ("rtt", "histogram"):
            print(f"{key:32} {value}")
    for name in PHASES:
        print(f"round trips, {name}: {json.dumps(result['rtt'][name])}")
        print(show_histogram(result["histogram"][name]))
    print("all:", json.dumps(result["rtt_all"]))


if __name__ == "__main__":
    main()
