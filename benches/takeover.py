"""What taking partitions costs a worker: the records behind each partition's first offset,
read again before it folds anything new (``streams.app.REFOLD_WINDOW``), at start and at
every rebalance.

Measured on the embedded broker, on ``--partitions`` partitions of ``--records`` envelopes
each (TransactionEvent updates, as a fleet sends them), read with ``streams.continuity``'s
``read_range``:

- **one by one**: a partition's read after another's, as ``Continuity.with_gaps`` reads gaps;
- **at once**: every partition's read started together, in threads (tried: no faster, since
  kafka-python's decoding holds the GIL, so not kept);
- **floor**: one consumer assigned every partition, reading them all in one scan.

    .venv/bin/python benches/takeover.py [--partitions 4] [--records 5000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.continuity import read_range
from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.settings import Settings


def envelope(partition: int, seq: int) -> bytes:
    return orjson.dumps({
        "station_id": f"TK-{partition:02d}", "origin": "cs", "msg_type": 2, "msg_id": f"m-{seq}",
        "action": "TransactionEvent", "ts": "2026-12-07T01:00:00.000Z", "protocol": "ocpp2.1",
        "conn_id": f"c-{partition}", "seq": seq, "valid": True, "error": None,
        "payload": {"eventType": "Updated", "timestamp": "2026-12-07T01:00:00.000Z", "seqNo": seq,
                    "triggerReason": "MeterValuePeriodic", "transactionInfo": {"transactionId": "T-1"},
                    "meterValue": [{"timestamp": "2026-12-07T01:00:00.000Z", "sampledValue": [
                        {"value": 1000.0 + seq, "measurand": "Energy.Active.Import.Register"}]}]},
    })  # fmt: skip


def fill(bootstrap: str, topic: str, partitions: int, records: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    for seq in range(1, records + 1):
        for p in range(partitions):
            producer.send(topic, envelope(p, seq), partition=p)
    producer.flush()
    producer.close()


def one_by_one(bootstrap: str, topic: str, partitions: int, records: int) -> int:
    return sum(len(read_range(bootstrap, topic, p, 0, records)) for p in range(partitions))


def at_once(bootstrap: str, topic: str, partitions: int, records: int) -> int:
    async def run() -> int:
        reads = (asyncio.to_thread(read_range, bootstrap, topic, p, 0, records) for p in range(partitions))
        return sum(len(found) for found in await asyncio.gather(*reads))

    return asyncio.run(run())


def floor(bootstrap: str, topic: str, partitions: int, records: int) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100)
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    found = 0
    try:
        while any(consumer.position(tp) < records for tp in tps):
            for batch in consumer.poll(timeout_ms=1000).values():
                found += sum(1 for message in batch if orjson.loads(message.value))
        return found
    finally:
        consumer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--records", type=int, default=5000, help="per partition (REFOLD_WINDOW)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    ways = {"one by one": one_by_one, "at once": at_once, "floor": floor}
    times: dict[str, list[float]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker(free_port(), log=Path(tmp) / "tansu.log") as broker:
        settings = Settings(partitions=args.partitions, topic_prefix="bench.")
        ensure_topics(settings, broker.bootstrap)
        topic = settings.topics.frames
        fill(broker.bootstrap, topic, args.partitions, args.records)
        for _ in range(args.repeat):  # alternating rounds: the host's noise falls on each
            for name, way in ways.items():
                began = time.perf_counter()
                got = way(broker.bootstrap, topic, args.partitions, args.records)
                times[name].append(time.perf_counter() - began)
                assert got == args.partitions * args.records, (name, got)
    median = {name: statistics.median(t) for name, t in times.items()}
    result = {
        "partitions": args.partitions, "records_per_partition": args.records,
        "seconds": {name: round(m, 3) for name, m in median.items()},
        "ratio_to_floor": {name: round(m / median["floor"], 2) for name, m in median.items()},
        "rounds": {name: [round(t, 3) for t in ts] for name, ts in times.items()},
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"taking {args.partitions} partitions, {args.records:,} records behind each (median of {args.repeat}):")
    for name, m in median.items():
        print(f"  {name:<11} {m:6.2f} s   {m / median['floor']:4.2f}× the floor")


if __name__ == "__main__":
    sys.exit(main())
