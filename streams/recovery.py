"""Faust's table recovery, unstuck when the records it waits for were fetched and dropped.

After a rebalance Faust seeks each changelog partition of its table back to the start and
waits for its records up to the highwater. Faust's consumer drops what a fetch returns while
its flow is suspended, and the rebalance suspends it: when a fetch of a changelog partition
lands in that window, the consumer's position is past the highwater, no record of it will
ever come again, and the worker waits in recovery forever ("No event received for active
tp ... since recovery start"), answering 503 for its stations. Seen on Apache Kafka in
tests/test_reliability.py's rebalance, in about one run in four with the worker's logging at
INFO: at the second worker's join, the first stuck on the changelog partition it kept.

:func:`stalled` sees it from Recovery's own counters and the consumer's positions; the worker
seeks such a partition back to the first record recovery has not applied, and Faust reads it
again (recovery skips what it has applied, by offset).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, TypeVar

log = logging.getLogger("twin.worker")

STALL = 10.0
"""Seconds without a record on a partition recovery still waits for, before it is sought back."""

TP = TypeVar("TP")


def stalled(
    applied: Mapping[TP, int | None],
    highwaters: Mapping[TP, int | None],
    positions: Mapping[TP, int | None],
    last_record: Mapping[TP, float],
    started: float,
    now: float,
    wait: float = STALL,
) -> dict[TP, int]:
    """The changelog partitions recovery waits for in vain, each with the offset to seek to.

    A partition is stalled when recovery has applied records only up to ``applied`` (-1 or
    None: none yet) of a log whose last record is at ``highwaters``, while the consumer's
    position is past ``applied + 1`` (it fetched records recovery never saw) and no record
    came for ``wait`` seconds (since ``last_record``, or since ``started`` for a partition
    that never had one)."""
    out: dict[TP, int] = {}
    for tp, highwater in highwaters.items():
        done = applied.get(tp)
        next_offset = 0 if done is None or done < 0 else done + 1
        position = positions.get(tp)
        if highwater is None or highwater < next_offset or position is None or position <= next_offset:
            continue
        if now - last_record.get(tp, started) >= wait:
            out[tp] = next_offset
    return out


async def unstick(app: Any) -> dict[Any, int]:
    """Seek the changelog partitions :func:`stalled` finds in ``app``'s recovery back; what
    was sought where. A no-op outside recovery."""
    recovery = app.tables.recovery
    if not recovery.in_recovery:  # (not ``app.rebalancing``: Faust keeps it set until recovery ends)
        return {}
    started = recovery._recovery_started_at  # Faust keeps its clock (monotonic) here
    if started is None:
        return {}
    assigned = app.consumer.assignment()
    highwaters = {tp: h for tp, h in recovery.active_highwaters.items() if tp in assigned}
    positions = {tp: await app.consumer.position(tp) for tp in highwaters}
    seeks = stalled(recovery.active_offsets, highwaters, positions, recovery._active_events_received_at,
                    started, time.monotonic())  # fmt: skip
    if seeks:
        for tp, offset in seeks.items():
            log.warning("recovery of %s:%d stalled at offset %d, the consumer at %s: reading it again",
                        tp.topic, tp.partition, offset, positions[tp])  # fmt: skip
        await app.consumer.seek_wait(seeks)
    return seeks
