"""The recorder's round on its own: ``twin.produce.ProduceRequests.send`` and its acks, against
the same module of another checkout (``--before DIR``, e.g. ``git archive <commit> src | tar -x
-C DIR``), both loaded in this process and alternating, on one embedded broker.

A round is ``--records`` records of ``--bytes`` bytes, one per station (as the gateway's rounds
are), to a topic of ``--partitions`` partitions; each is sent and its acks awaited ``--rounds``
times. The figure is this process's CPU per round (the broker's is not counted): what capture
costs the gateway for a round, apart from the sessions' own work.

    .venv/bin/python benches/produce.py --before /tmp/twin-before [--records 20] [--repeat 8]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import statistics
import time
from pathlib import Path
from types import ModuleType

from aiokafka import AIOKafkaProducer

from twin import produce
from twin.broker import EmbeddedBroker, ensure_topics, free_port
from twin.settings import Settings


def _module_of(checkout: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("produce_before", checkout / "src" / "twin" / "produce.py")
    assert spec is not None and spec.loader is not None, checkout
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def _cpu_per_round(module: ModuleType, producer: AIOKafkaProducer, topic: str, args: argparse.Namespace) -> float:
    requests = module.ProduceRequests(5.0)
    value = b'{"x":"' + b"1" * max(0, args.bytes - 8) + b'"}'
    records = [(topic, f"CS-{i:05d}".encode(), value) for i in range(args.records)]
    began = time.process_time()
    for _ in range(args.rounds):
        sent = await requests.send(producer, records)
        await asyncio.gather(*getattr(sent, "acks", sent))  # a list of acks before session 20
    return (time.process_time() - began) / args.rounds * 1e6


async def main(args: argparse.Namespace) -> dict[str, list[float]]:
    modules = {"before": _module_of(args.before), "now": produce} if args.before else {"now": produce}
    figures: dict[str, list[float]] = {name: [] for name in modules}
    with EmbeddedBroker(free_port()) as broker:
        settings = Settings(bootstrap=broker.bootstrap, partitions=args.partitions)
        ensure_topics(settings, broker.bootstrap)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=0)
        await producer.start()
        try:
            for _ in range(args.repeat):
                for name, module in modules.items():  # alternate, so drift in the machine hits each alike
                    figures[name].append(await _cpu_per_round(module, producer, settings.topics.frames, args))
        finally:
            await producer.stop()
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="a checkout of twin as it was")
    parser.add_argument("--records", type=int, default=20, help="records a round")
    parser.add_argument("--bytes", type=int, default=300, help="bytes a record")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1000, help="rounds a measurement")
    parser.add_argument("--repeat", type=int, default=8, help="measurements of each, alternating")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(main(args))
    if args.json:
        print(json.dumps(figures))
    else:
        for name, values in figures.items():
            print(f"{name:7s} CPU µs a round {[round(v, 1) for v in values]} median {statistics.median(values):.1f}")
        if "before" in figures:
            ratio = statistics.median(figures["now"]) / statistics.median(figures["before"])
            print(f"now / before: {ratio:.2f}")
