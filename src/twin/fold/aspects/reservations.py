"""Reservations, their whole lifecycle: ReserveNow and its answer, CancelReservation,
ReservationStatusUpdate, and the transaction that uses one (``reservationId``).

Statuses: active, used, expired, cancelled, rejected, removed."""

from __future__ import annotations

from twin.fold.engine import Change, Event, on

_UPDATE = {"Expired": "expired", "Removed": "removed", "NoTransaction": "expired"}


@on("ReserveNow", "result")
def reserved(change: Change, event: Event) -> None:
    request = event.request or {}
    status = "active" if event.accepted else "rejected"
    change.at("reservations")[str(request.get("id"))] = {
        "evse_id": request.get("evseId"),
        "status": status,
        "answer": event.payload.get("status"),
        "expires_at": request.get("expiryDateTime"),
        "id_token": (request.get("idToken") or {}).get("idToken"),
        "made_at": event.ts,
        "updated_at": event.ts,
        # made for a roaming party (twin ocpi tags its calls): who, and under which OCPI id
        "roaming": (request.get("customData") or {}).get("ocpi"),
    }


def _update(change: Change, reservation_id: object, status: str, ts: str, **extra: object) -> None:
    key = str(reservation_id)
    if key not in change.twin["reservations"]:  # made before the log began: known from now on
        change.at("reservations")[key] = {"evse_id": None, "expires_at": None, "id_token": None, "made_at": None}
    reservation = change.at("reservations", key)
    reservation.update(status=status, updated_at=ts, **extra)


@on("CancelReservation", "result")
def cancelled(change: Change, event: Event) -> None:
    if event.accepted and event.request is not None:
        _update(change, event.request.get("reservationId"), "cancelled", event.ts)


@on("ReservationStatusUpdate")
def status_update(change: Change, event: Event) -> None:
    p = event.payload
    update = str(p.get("reservationUpdateStatus"))
    _update(change, p.get("reservationId"), _UPDATE.get(update, "removed"), event.ts, reason=update)


@on("TransactionEvent")
def used(change: Change, event: Event) -> None:
    p = event.payload
    if "reservationId" in p:
        transaction_id = (p.get("transactionInfo") or {}).get("transactionId")
        current = change.twin["reservations"].get(str(p["reservationId"]), {})
        if current.get("status") != "used":
            _update(change, p["reservationId"], "used", event.ts, transaction_id=transaction_id)
