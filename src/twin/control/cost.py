"""Central cost (OCPP 2.1 I03): for stations that compute no cost themselves, the running cost
of each transaction, worked out from the twin and sent as ``CostUpdated``, and its final cost
once it has ended.

Pure: the twins, the stations' time and what was sent before are arguments, the CostUpdated
calls the answer; ``twin controller --central-cost`` sends them. A transaction is costed
centrally when it runs on a station that is online, its twin holds the tariffs it started
with (``transaction.tariffs``, which only a 2.1 station's tariffs give) and the station has
reported no ``costDetails`` for it (no ``cost`` of source ``local``).

The cost is :func:`twin.cost.session_cost` of the transaction's readings as the twin keeps
them (``transaction.readings``: those of its TransactionEvents that change the cost), in the
station's time zone (``tariffs.time_zone``, UTC while the log says none): the same function,
readings and zone as the station's own cost and ``twin report tariffs``, so a session that
straddles a time-of-day boundary is cut there exactly as they cut it. A twin without readings
(folded before they were kept) gives the energy moved (``import_wh``) by the last reading
(``meter_ts``) and, the EVSE idle since before it, when the charging stopped. ``totalCost``
includes tax where the tariff gives tax rates (the standard's CostUpdated is including tax),
else it is the cost without.

The final cost: OCPP 2.1 has the CSMS answer the TransactionEvent of ``Ended`` with
``totalCost``, but the gateway answers at once from no twin (its hot path stays free of
prices); so once the twin shows the transaction ended, the cost to its end goes to the
station as one more CostUpdated (:func:`final_costs`), which the twin records as ``final``;
until the twin shows it so (the station offline, the call lost), it goes again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from twin.cost import Sample, TariffTimeline, session_cost, twin_timeline
from twin.tariffs import DEFAULT_ZONE, instant, station_zone

LastSent = Mapping[str, tuple[datetime, float]]
"""Per transaction id, when (the stations' time) and what total was last sent."""
FINAL_WITHIN_S = 3600.0
"""A transaction that ended longer ago than this (the stations' time) is sent no final cost:
the controller starting on an old log does not bill its past."""


def running_cost(tx: Mapping[str, Any], energy: Mapping[str, Any],
                 tz: str = DEFAULT_ZONE) -> tuple[float, datetime] | None:  # fmt: skip
    """The transaction's cost so far and the moment it is for (its last reading; once it has
    ended, its end); None without tariffs or a start."""
    tariffs: TariffTimeline = twin_timeline(tx)
    if not tariffs or not tx.get("started_at"):
        return None
    start = instant(tx["started_at"])
    samples = [Sample(instant(at), float(wh), power) for at, wh, power in tx.get("readings") or ()]
    if samples:
        last = max(samples[-1].at, start)
    else:
        last = max(instant(energy["meter_ts"]) if energy.get("meter_ts") else start, start)
        moved = float(tx.get("import_wh") or 0.0)
        since = instant(energy["since"]) if energy.get("since") else None
        if energy.get("direction") == "idle" and since is not None and start < since < last:
            samples.append(Sample(since, moved))  # charged up to here, idle after
        samples.append(Sample(last, moved))
    if tx.get("state") == "ended" and tx.get("ended_at"):
        last = max(last, instant(tx["ended_at"]))
    cost = session_cost(tariffs, start, samples, end=last, tz=tz)
    total = cost.total_incl_tax if cost.total_incl_tax is not None else cost.total_excl_tax
    return round(total, 4), last


def cost_updates(twins: Mapping[str, Mapping[str, Any]], now: datetime, last_sent: LastSent,
                 interval_s: float) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """The CostUpdated calls due at ``now``: for each transaction costed centrally, its first,
    then one each ``interval_s`` of the stations' time when the total changed.
    ``(station_id, {"totalCost", "transactionId"})``."""
    out = []
    for station_id, twin, evse, tx in _online_transactions(twins):
        if tx.get("state") == "ended" or (tx.get("cost") or {}).get("source") == "local":
            continue
        sent = last_sent.get(str(tx["id"]))
        if sent is not None and now - sent[0] < timedelta(seconds=interval_s):
            continue
        found = running_cost(tx, evse.get("energy") or {}, station_zone(twin))
        if found is None or (sent is not None and found[0] == sent[1]):
            continue
        out.append((station_id, {"totalCost": found[0], "transactionId": str(tx["id"])}))
    return out


Found = tuple[str, Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]


def _online_transactions(twins: Mapping[str, Mapping[str, Any]]) -> Iterator[Found]:
    """``(station_id, twin, evse, transaction)`` of every transaction on a station online."""
    for station_id, twin in sorted(twins.items()):
        if not (twin.get("connection") or {}).get("online"):
            continue
        for evse in (twin.get("evses") or {}).values():
            tx = evse.get("transaction") or {}
            if tx.get("id"):
                yield station_id, twin, evse, tx


def final_costs(twins: Mapping[str, Mapping[str, Any]], now: datetime, sent: Mapping[str, datetime],
                again_s: float) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """The CostUpdated calls of final costs due: for each transaction costed centrally that
    has ended (within :data:`FINAL_WITHIN_S` of ``now``) on a station online and whose twin
    shows no final cost, its cost to its end; once more where it was sent (``sent``: when,
    the stations' time) ``again_s`` ago and the twin still shows none (the station was
    offline, the call lost)."""
    out = []
    for station_id, twin, evse, tx in _online_transactions(twins):
        cost = tx.get("cost") or {}
        if tx.get("state") != "ended" or not tx.get("ended_at") or cost.get("source") == "local" or cost.get("final"):
            continue
        if str(tx["id"]) in sent and now - sent[str(tx["id"])] < timedelta(seconds=again_s):
            continue
        if now - instant(tx["ended_at"]) > timedelta(seconds=FINAL_WITHIN_S):
            continue
        found = running_cost(tx, evse.get("energy") or {}, station_zone(twin))
        if found is not None:
            out.append((station_id, {"totalCost": found[0], "transactionId": str(tx["id"])}))
    return out
