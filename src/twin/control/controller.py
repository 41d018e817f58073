"""``twin controller``: the process that plans live. Thin: it reads ``twin.state`` (every
twin) and ``grid.signals`` from the beginning, keeps the latest of each in memory, and for
each site calls :func:`twin.control.decision.decide`; the profiles go to ``ocpp.commands``
like any CSMS-initiated call (so every plan is in the log, and every answer is folded into
the twins it reads), the explanation to ``control.plans``. It never writes a twin.

A site is planned again when an EV arrives or leaves, sends new needs, when a profile is
answered otherwise than Accepted, when the limit in force changes, and at least every
planning step. Plans are made in the stations' time: on a simulated fleet running
``time_scale`` times faster than the wall clock, the controller's clock follows the meter
values' timestamps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from twin import kafka_security
from twin.broker import STOP_WITHIN, stop_quietly
from twin.control.cost import cost_updates, final_costs
from twin.control.decision import Decision, decide
from twin.control.needs import DEFAULTS, Defaults, plugged
from twin.gateway.commands import command
from twin.settings import Settings
from twin.sites import Site, limit_at

log = logging.getLogger("twin.controller")
SIGNALS_KEPT = 1000
"""Grid signals kept per site (the newest): enough for days of 15-minute intervals."""
COSTS_KEPT = 10_000
"""Transactions whose last CostUpdated the process remembers (the oldest forgotten first)."""
FINAL_AGAIN = 5
"""Intervals after which a final cost the twin does not show yet is sent again."""
SETTLE_S = 1.0
"""A triggered re-plan waits this long (wall time) for the rest of the burst that caused it."""


class Clock:
    """The stations' time: the wall clock, or on a fleet that runs ``scale`` times faster,
    the newest meter timestamp seen, moved on at that pace."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.mark: tuple[datetime, float] | None = None

    def saw(self, moment: datetime) -> None:
        if self.scale != 1.0 and (self.mark is None or moment > self.now()):
            self.mark = (moment, time.monotonic())

    def now(self) -> datetime:
        if self.scale == 1.0 or self.mark is None:
            return datetime.now(UTC)
        at, seen = self.mark
        return at + timedelta(seconds=(time.monotonic() - seen) * self.scale)


def _newest_meter(twin: Mapping[str, Any]) -> datetime | None:
    times = [str((e.get("energy") or {}).get("meter_ts") or "") for e in (twin.get("evses") or {}).values()]
    newest = max((t for t in times if t), default=None)
    try:
        moment = datetime.fromisoformat(newest.replace("Z", "+00:00")) if newest else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class Controller:
    """What the process keeps between messages, and what it decides from it."""

    def __init__(self, sites: Sequence[Site], inventory: Mapping[str, Mapping[str, Any]], step_s: float = 300.0,
                 clock: Clock | None = None, defaults: Defaults = DEFAULTS) -> None:  # fmt: skip
        self.sites = list(sites)
        self.site_of = {station: site for site in self.sites for station in site.stations}
        self.inventory, self.step_s, self.defaults = inventory, step_s, defaults
        self.clock = clock or Clock()
        self.twins: dict[str, dict[str, Any]] = {}
        self.signals: dict[str, list[dict[str, Any]]] = {}
        self.marks: dict[str, tuple[Any, ...]] = {}  # per site: what a change of triggers a re-plan
        self.dirty: dict[str, float] = {}  # site -> when (monotonic) it first changed
        self.planned: dict[str, float] = {}  # site -> when (monotonic) it was last planned
        self.sent: dict[tuple[str, int], tuple[Any, ...]] = {}  # (station, evse) -> the schedule last sent

    def twin(self, station_id: str, twin: dict[str, Any] | None) -> None:
        if twin is None:
            self.twins.pop(station_id, None)
        else:
            self.twins[station_id] = twin
            moment = _newest_meter(twin)
            if moment is not None:
                self.clock.saw(moment)
        site = self.site_of.get(station_id)
        if site is not None:
            self._touch(site)

    def signal(self, signal: dict[str, Any]) -> None:
        kept = self.signals.setdefault(str(signal.get("site_id")), [])
        kept.append(signal)
        del kept[:-SIGNALS_KEPT]
        site = next((s for s in self.sites if s.site_id == signal.get("site_id")), None)
        if site is not None:
            self._touch(site)

    def _touch(self, site: Site) -> None:
        """Mark the site for a re-plan when what it plans from changed in a way that counts:
        not every meter value, but arrivals, departures, needs, answers and the limit."""
        now = self.clock.now()
        needs = plugged(site, self.twins, now, self.inventory, self.defaults)
        limit = limit_at(site, self.signals.get(site.site_id, []), now)
        mark = (tuple(sorted((n.key, n.transaction_id, n.departure, round(n.demand.max_kw, 1), n.obeys,
                              n.profile_status) for n in needs)),
                limit.import_kw, limit.export_kw)  # fmt: skip
        if self.marks.get(site.site_id) != mark:
            self.marks[site.site_id] = mark
            self.dirty.setdefault(site.site_id, time.monotonic())

    def due(self, wall_step_s: float) -> list[Site]:
        """The sites to plan now: changed (and settled), or a planning step since the last."""
        now = time.monotonic()
        for site in self.sites:  # the limit in force moves with time too
            self._touch(site)
        out = []
        for site in self.sites:
            changed = self.dirty.get(site.site_id)
            last = self.planned.get(site.site_id)
            if (changed is not None and now - changed >= SETTLE_S) or last is None or now - last >= wall_step_s:
                out.append(site)
        return out

    def decide(self, site: Site) -> tuple[Decision, list[tuple[str, dict[str, Any]]]]:
        """The site's decision, and the profiles to send: those whose schedule changed, and
        every one at each planning step (an absolute schedule starts again from now)."""
        periodic = time.monotonic() - self.planned.get(site.site_id, -1e9) >= self.step_s / self.clock.scale
        decision = decide(site, self.twins, self.signals.get(site.site_id, []), self.inventory, self.clock.now(),
                          self.step_s, self.defaults)  # fmt: skip
        self.dirty.pop(site.site_id, None)
        self.planned[site.site_id] = time.monotonic() if periodic else self.planned.get(site.site_id, time.monotonic())
        out = []
        for station_id, request in decision.profiles:
            profile = request["chargingProfile"]
            schedule = profile["chargingSchedule"][0]["chargingSchedulePeriod"]
            shape = (profile.get("transactionId"), tuple((p.get("limit"), p.get("setpoint")) for p in schedule))
            key = (station_id, int(request["evseId"]))
            if periodic or self.sent.get(key) != shape:
                self.sent[key] = shape
                out.append((station_id, request))
        return decision, out


async def run(settings: Settings, bootstrap: str, controller: Controller, stop: asyncio.Event,
              cost_interval_s: float | None = None) -> None:  # fmt: skip
    """Consume, decide, send, until ``stop``; with ``cost_interval_s``, central cost too
    (:func:`twin.control.cost.cost_updates`)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    topics = settings.topics
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", **kafka_security.aiokafka(settings))  # fmt: skip
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                                **kafka_security.aiokafka(settings))
    await consumer.start()
    await producer.start()
    try:
        wanted = (topics.state, topics.signals)
        partitions: list[TopicPartition] = []
        while not partitions and not stop.is_set():
            await consumer._client.force_metadata_update()
            partitions = [TopicPartition(t, p) for t in wanted for p in sorted(consumer.partitions_for_topic(t) or ())]
            if not partitions:
                await asyncio.sleep(0.5)
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        caught_up = False
        costs_sent: dict[str, tuple[datetime, float]] = {}
        finals_sent: dict[str, datetime] = {}  # transactions sent their final cost, when (oldest first)
        costs_at = 0.0  # monotonic: costs are worked out at most once a second
        wall_step = controller.step_s / controller.clock.scale
        log.info("controller: %d sites, a plan every %g s of station time (%g s here); reading the twins",
                 len(controller.sites), controller.step_s, wall_step)  # fmt: skip
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, messages in batch.items():
                for message in messages:
                    _consume(controller, topics, tp.topic, message.key, message.value)
            if not caught_up:
                positions = {tp: await consumer.position(tp) for tp in partitions}
                caught_up = all(positions[tp] >= end for tp, end in ends.items())
                if not caught_up:
                    continue
                log.info("controller: caught up (%d twins); planning", len(controller.twins))
            if cost_interval_s is not None and time.monotonic() >= costs_at:
                costs_at = time.monotonic() + 1.0
                await _send_costs(controller, producer, topics, costs_sent, cost_interval_s, finals_sent)
            for site in controller.due(wall_step):
                decision, profiles = controller.decide(site)
                for station_id, request in profiles:
                    cmd = command(station_id, "SetChargingProfile", request, "controller")
                    await producer.send(topics.commands, key=station_id.encode(), value=orjson.dumps(cmd))
                document = {**decision.document, "profiles_sent": len(profiles)}
                await producer.send(topics.plans, key=site.site_id.encode(), value=orjson.dumps(document))
                if profiles:
                    log.info("site %s: %d EVs, %.1f kW planned now under %.1f kW (%s); %d profiles sent",
                             site.site_id, len(decision.document["evses"]), decision.document["plan_import_kw"],
                             decision.document["limit"]["import_kw"], decision.document["limit"]["source"],
                             len(profiles))  # fmt: skip
            await producer.flush()
    finally:
        await stop_quietly(consumer, STOP_WITHIN)
        await stop_quietly(producer, STOP_WITHIN)


async def _send_costs(controller: Controller, producer: Any, topics: Any, sent: dict[str, tuple[datetime, float]],
                      interval_s: float, finals: dict[str, datetime]) -> None:  # fmt: skip
    now = controller.clock.now()
    for station_id, payload in cost_updates(controller.twins, now, sent, interval_s):
        sent[payload["transactionId"]] = (now, payload["totalCost"])
        cmd = command(station_id, "CostUpdated", payload, "controller")
        await producer.send(topics.commands, key=station_id.encode(), value=orjson.dumps(cmd))
    for station_id, payload in final_costs(controller.twins, now, finals, FINAL_AGAIN * interval_s):
        finals.pop(payload["transactionId"], None)
        finals[payload["transactionId"]] = now
        cmd = command(station_id, "CostUpdated", payload, "controller")
        await producer.send(topics.commands, key=station_id.encode(), value=orjson.dumps(cmd))
        log.info("%s: final cost of transaction %s: %s", station_id, payload["transactionId"], payload["totalCost"])
    for kept in (sent, finals):
        if len(kept) > COSTS_KEPT:  # transactions long ended
            for tx_id in list(kept)[: len(kept) - COSTS_KEPT]:
                del kept[tx_id]


def _consume(controller: Controller, topics: Any, topic: str, key: bytes | None, value: bytes | None) -> None:
    try:
        body = orjson.loads(value) if value else None
    except orjson.JSONDecodeError:
        log.warning("unreadable record on %s (key %r): skipped", topic, key)
        return
    if topic == topics.state and key:
        controller.twin(key.decode(), body if isinstance(body, dict) else None)
    elif topic == topics.signals and isinstance(body, dict):
        controller.signal(body)
