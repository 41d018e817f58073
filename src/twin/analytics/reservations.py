"""Reservation lifecycles: one row per reservation (station, id), from the CSMS's ReserveNow
and the station's answer, CancelReservation and its answer, ReservationStatusUpdate, and a
TransactionEvent that carries the reservationId.

``status``: ``rejected`` (the station did not answer Accepted), ``used`` (a transaction
carried it), ``cancelled`` (CancelReservation answered Accepted), ``expired``
(ReservationStatusUpdate Expired), ``removed`` (any other update status), else ``active``.
``ended_at``: when it was used, cancelled or ended by the station (null while active).
``minutes_to_plug_in``: from the reservation to the transaction's start, for used ones.
A reservation id made again on the same station is a new reservation from then on: the
latest ReserveNow is the one reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twin.analytics.frames import query

SQL = """
WITH made AS (
    SELECT c.station_id, TRY_CAST(c.payload->>'$.id' AS BIGINT) AS reservation_id,
           TRY_CAST(c.payload->>'$.evseId' AS BIGINT) AS evse_id, c.ts AS made_at,
           TRY_CAST(c.payload->>'$.expiryDateTime' AS TIMESTAMPTZ) AS expires_at,
           a.payload->>'$.status' AS answer
    FROM frames c
    LEFT JOIN frames a ON a.conn_id = c.conn_id AND a.msg_id = c.msg_id AND a.origin = 'cs' AND a.msg_type IN (3, 4, 5)
    WHERE c.action = 'ReserveNow' AND c.msg_type = 2 AND c.origin = 'csms' AND c.valid
    QUALIFY row_number() OVER (PARTITION BY c.station_id, reservation_id ORDER BY c.ts DESC) = 1
),
cancelled AS (
    SELECT c.station_id, TRY_CAST(c.payload->>'$.reservationId' AS BIGINT) AS reservation_id, min(c.ts) AS at
    FROM frames c
    JOIN frames a ON a.conn_id = c.conn_id AND a.msg_id = c.msg_id AND a.origin = 'cs' AND a.msg_type = 3
    WHERE c.action = 'CancelReservation' AND c.msg_type = 2 AND c.origin = 'csms'
      AND a.payload->>'$.status' = 'Accepted'
    GROUP BY ALL
),
updates AS (
    SELECT station_id, TRY_CAST(payload->>'$.reservationId' AS BIGINT) AS reservation_id,
           min(ts) AS at, min(payload->>'$.reservationUpdateStatus') AS update_status
    FROM frames WHERE action = 'ReservationStatusUpdate' AND msg_type = 2 AND origin = 'cs' AND valid
    GROUP BY ALL
),
used AS (
    SELECT station_id, TRY_CAST(payload->>'$.reservationId' AS BIGINT) AS reservation_id,
           min(TRY_CAST(payload->>'$.timestamp' AS TIMESTAMPTZ)) AS at
    FROM frames WHERE action = 'TransactionEvent' AND msg_type = 2 AND origin = 'cs' AND valid
      AND payload->>'$.reservationId' IS NOT NULL
    GROUP BY ALL
),
lifecycle AS (
    SELECT m.*, u.at AS used_at, c.at AS cancelled_at, up.at AS updated_at, up.update_status,
           CASE WHEN coalesce(m.answer, '') <> 'Accepted' THEN 'rejected'
                WHEN u.at IS NOT NULL AND u.at >= m.made_at THEN 'used'
                WHEN c.at IS NOT NULL AND c.at >= m.made_at THEN 'cancelled'
                WHEN up.update_status = 'Expired' AND up.at >= m.made_at THEN 'expired'
                WHEN up.update_status IS NOT NULL AND up.at >= m.made_at THEN 'removed'
                ELSE 'active' END AS status
    FROM made m
    LEFT JOIN used u USING (station_id, reservation_id)
    LEFT JOIN cancelled c USING (station_id, reservation_id)
    LEFT JOIN updates up USING (station_id, reservation_id)
)
SELECT reservation_id, station_id, evse_id, status,
       strftime(made_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS made_at,
       strftime(CASE status WHEN 'used' THEN used_at WHEN 'cancelled' THEN cancelled_at
                            WHEN 'expired' THEN updated_at WHEN 'removed' THEN updated_at
                            WHEN 'rejected' THEN made_at END, '%Y-%m-%dT%H:%M:%S.%gZ') AS ended_at,
       strftime(expires_at, '%Y-%m-%dT%H:%M:%S.%gZ') AS expires_at,
       CASE WHEN status = 'used' THEN round(date_diff('millisecond', made_at, used_at) / 60000, 2) END
           AS minutes_to_plug_in
FROM lifecycle
WHERE (CAST(? AS TIMESTAMPTZ) IS NULL OR made_at >= CAST(? AS TIMESTAMPTZ))
  AND (CAST(? AS TIMESTAMPTZ) IS NULL OR made_at < CAST(? AS TIMESTAMPTZ))
ORDER BY made_at, station_id, reservation_id
"""


def reservations_duckdb(
    capture: str | Path, since: str | None = None, until: str | None = None
) -> list[dict[str, Any]]:
    actions = ("ReserveNow", "CancelReservation", "ReservationStatusUpdate", "TransactionEvent")
    # of the (many) TransactionEvents only those that carry a reservation: a text test on the
    # stored payload before any JSON is parsed (the SQL checks the parsed field again)
    carries = "action <> 'TransactionEvent' OR contains(payload, '\"reservationId\"')"
    return query(capture, actions, SQL, [since, since, until, until], where=carries, once=True)


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Made, and how they ended; the no-show rate is expired over accepted."""
    counts = {s: sum(r["status"] == s for r in rows) for s in ("used", "expired", "cancelled", "rejected", "removed",
                                                                "active")}  # fmt: skip
    accepted = len(rows) - counts["rejected"]
    waits = sorted(r["minutes_to_plug_in"] for r in rows if r["minutes_to_plug_in"] is not None)
    return {
        "made": len(rows), **counts,
        "no_show_rate": round(counts["expired"] / accepted, 4) if accepted else None,
        "median_minutes_to_plug_in": waits[len(waits) // 2] if waits else None,
    }  # fmt: skip
