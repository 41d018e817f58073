"""Central cost (OCPP 2.1 I03): for stations that compute no cost themselves, the running cost
of each transaction, worked out from the twin and sent as ``CostUpdated``.

Pure: the twins, the stations' time and what was sent before are arguments, the CostUpdated
calls the answer; ``twin controller --central-cost`` sends them. A transaction is costed
centrally when it runs on a station that is online, its twin holds the tariffs it started
with (``transaction.tariffs``, which only a 2.1 station's tariffs give) and the station has
reported no ``costDetails`` for it (no ``cost`` of source ``local``).

The cost is :func:`twin.cost.session_cost` of what the twin knows: the transaction's start,
the energy it moved (``transaction.import_wh``) by its EVSE's last reading (``meter_ts``), and,
where the EVSE has been idle since before that reading (``energy.direction``, ``since``), the
moment the charging stopped: the stretch after it is idle time. Between those points energy
is taken to flow evenly. ``totalCost`` includes tax where the tariff gives tax rates (the
standard's CostUpdated is including tax), else it is the cost without.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from twin.cost import Sample, TariffTimeline, session_cost
from twin.tariffs import Tariff, instant

LastSent = Mapping[str, tuple[datetime, float]]
"""Per transaction id, when (the stations' time) and what total was last sent."""


def timeline(tx: Mapping[str, Any]) -> list[tuple[datetime | None, Tariff]]:
    """A transaction's tariffs as the twin keeps them (``{"1": {"tariff", "set_at"}, ...}``),
    as :func:`twin.cost.session_cost` takes them: the first from the start."""
    kept = sorted((tx.get("tariffs") or {}).items(), key=lambda kv: int(kv[0]))
    return [(None if i == 0 else instant(v["set_at"]), v["tariff"]) for i, (_, v) in enumerate(kept)]


def running_cost(tx: Mapping[str, Any], energy: Mapping[str, Any]) -> tuple[float, datetime] | None:
    """The transaction's cost so far and the moment it is for (its EVSE's last reading);
    None without tariffs or a start."""
    tariffs: TariffTimeline = timeline(tx)
    if not tariffs or not tx.get("started_at"):
        return None
    start = instant(tx["started_at"])
    last = instant(energy["meter_ts"]) if energy.get("meter_ts") else start
    last = max(last, start)
    moved = float(tx.get("import_wh") or 0.0)
    samples = []
    since = instant(energy["since"]) if energy.get("since") else None
    if energy.get("direction") == "idle" and since is not None and start < since < last:
        samples.append(Sample(since, moved))  # charged up to here, idle after
    samples.append(Sample(last, moved))
    cost = session_cost(tariffs, start, samples, end=last)
    total = cost.total_incl_tax if cost.total_incl_tax is not None else cost.total_excl_tax
    return round(total, 4), last


def cost_updates(twins: Mapping[str, Mapping[str, Any]], now: datetime, last_sent: LastSent,
                 interval_s: float) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
    """The CostUpdated calls due at ``now``: for each transaction costed centrally, its first,
    then one each ``interval_s`` of the stations' time when the total changed.
    ``(station_id, {"totalCost", "transactionId"})``."""
    out = []
    for station_id, twin in sorted(twins.items()):
        if not (twin.get("connection") or {}).get("online"):
            continue
        for evse in (twin.get("evses") or {}).values():
            tx = evse.get("transaction") or {}
            if not tx.get("id") or tx.get("state") == "ended" or (tx.get("cost") or {}).get("source") == "local":
                continue
            sent = last_sent.get(str(tx["id"]))
            if sent is not None and now - sent[0] < timedelta(seconds=interval_s):
                continue
            found = running_cost(tx, evse.get("energy") or {})
            if found is None or (sent is not None and found[0] == sent[1]):
                continue
            out.append((station_id, {"totalCost": found[0], "transactionId": str(tx["id"])}))
    return out
