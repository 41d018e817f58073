"""``twin tariff``: set, change, clear and get OCPP 2.1 tariffs on stations, and show what the
twin knows of them.

Each command queues its calls on ``ocpp.commands`` and waits for the stations' answers on
``ocpp.frames``. A call carries its command id in the request's ``customData``
(``{"vendorId": "twin", "commandId": ...}``, which every OCPP 2.1 payload allows), so the
answer is found by the CALL that carried it; ``CommandUndelivered`` and ``CallTimeout``
records name the command id themselves.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from twin import kafka_security
from twin.cli.app import Bootstrap, Json, KafkaConfig, TwinTyper, app, err, fail, print_json, reachable
from twin.cli.door import ApiToken
from twin.cli.twins import api_get
from twin.gateway.commands import command, command_problem
from twin.settings import Settings
from twin.tariffs import CLOCK_ZONE, TariffError, known_zone, load

tariff_app = TwinTyper(
    help="OCPP 2.1 tariffs: set a default tariff, change a transaction's, clear, get, show; a station's time zone "
    "(its tariffs' times of day are local time, UTC until `twin tariff zone` sets one).", no_args_is_help=True
)
app.add_typer(tariff_app, name="tariff")

VENDOR = "twin"
NO_TARIFFS = "speaks OCPP 2.0.1, which has no tariff messages: not sent"
Api = Annotated[str | None, typer.Option("--api", help="URL of a worker's API (default http://127.0.0.1:6066).")]
Wait = Annotated[float, typer.Option("--wait", help="Seconds to wait for the stations' answers.")]
Evse = Annotated[int | None, typer.Option("--evse", help="The EVSE (0 or absent: every EVSE of the station).")]
All = Annotated[bool, typer.Option("--all", help="Every OCPP 2.1 station the twin knows.")]
SiteOpt = Annotated[str | None, typer.Option("--site", help="Every station of this site (sites as `twin controller`).")]
By = Annotated[str, typer.Option("--by", help="Who asks (recorded with the command).")]


# -- the stations asked ----------------------------------------------------------------------------


def _targets(stations: list[str], every: bool, site: str | None, api: str | None,
             settings: Settings) -> list[str]:  # fmt: skip
    if every:
        listing = api_get(api, "/v1/stations", absent=True)
        if listing is None:
            fail(f"--all needs the twin API ({Settings.load(api=api).api_url}); is `twin worker` running?")
        return sorted(r["station_id"] for r in listing["stations"] if r.get("protocol") != "ocpp2.0.1")
    if site:
        from twin.cli.control import load_sites

        found = {s.site_id: s for s in load_sites(settings)[0]}
        if site not in found:
            fail(f"no site {site!r} (sites: {', '.join(sorted(found)) or 'none'})")
        return list(found[site].stations)
    if not stations:
        fail("name a STATION, or give --all or --site")
    return stations


def _protocol(api: str | None, station: str) -> str | None:
    twin = api_get(api, f"/v1/stations/{station}", absent=True)
    return twin.get("protocol") if isinstance(twin, dict) and "error" not in twin else None


# -- sending and waiting -------------------------------------------------------------------------


def _tagged(payload: dict[str, Any], command_id: str) -> dict[str, Any]:
    return {**payload, "customData": {"vendorId": VENDOR, "commandId": command_id}}


def send_and_wait(settings: Settings, calls: list[tuple[str, str, dict[str, Any]]], by: str,
                  wait_s: float) -> list[dict[str, Any]]:  # fmt: skip
    """Queue ``(station, action, payload)`` calls and wait until each has an outcome:
    ``answered`` (with the station's answer), ``error`` (a CALLERROR), ``undelivered``,
    ``timeout`` (the gateway's call timeout), or ``no answer`` by ``wait_s``."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    target = reachable(settings, ("Write", settings.topics.commands), ("Read", settings.topics.frames))
    topic = settings.topics.frames
    consumer = KafkaConsumer(bootstrap_servers=target, enable_auto_commit=False, consumer_timeout_ms=200,
                             **kafka_security.kafka_python(settings))
    parts = consumer.partitions_for_topic(topic) or {0}
    consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
    consumer.seek_to_end()
    for tp in consumer.assignment():
        consumer.position(tp)  # resolve the end now: what comes after the commands is read
    producer = KafkaProducer(bootstrap_servers=target, acks="all", **kafka_security.kafka_python(settings))
    outcomes: dict[str, dict[str, Any]] = {}
    calls_of: dict[tuple[str, str], str] = {}  # (conn_id, msg_id) -> command id
    for station, action, payload in calls:
        cmd = command(station, action, {}, by)
        cmd["payload"] = _tagged(payload, cmd["command_id"])
        producer.send(settings.topics.commands, key=station.encode(), value=orjson.dumps(cmd))
        outcomes[cmd["command_id"]] = {"station_id": station, "action": action, "command_id": cmd["command_id"],
                                       "outcome": "no answer", "status": None, "reason": None,
                                       "answer": None}  # fmt: skip
    producer.flush(10)
    producer.close()
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline and any(o["outcome"] == "no answer" for o in outcomes.values()):
            for batch in consumer.poll(timeout_ms=300).values():
                for message in batch:
                    _match(orjson.loads(message.value), outcomes, calls_of)
    finally:
        consumer.close()
    return list(outcomes.values())


def _match(r: dict[str, Any], outcomes: dict[str, dict[str, Any]], calls_of: dict[tuple[str, str], str]) -> None:
    kind, payload = r.get("msg_type"), r.get("payload") or {}
    if kind == 2 and r.get("origin") == "csms":
        tag = payload.get("customData") if isinstance(payload, dict) else None
        if isinstance(tag, dict) and tag.get("commandId") in outcomes:
            calls_of[(r["conn_id"], r["msg_id"])] = tag["commandId"]
        return
    if kind in (3, 4, 5) and (r.get("conn_id"), r.get("msg_id")) in calls_of:
        o = outcomes[calls_of[(r["conn_id"], r["msg_id"])]]
        if kind == 3:
            o.update(outcome="answered", answer=payload, status=payload.get("status") or _status_of(payload),
                     reason=(payload.get("statusInfo") or {}).get("reasonCode"))  # fmt: skip
        else:
            o.update(outcome="error", reason=f"{payload.get('errorCode')}: {payload.get('errorDescription')}")
        return
    if kind == 0 and r.get("action") in ("CommandUndelivered", "CallTimeout"):
        lost = outcomes.get(str(payload.get("command_id")))
        if lost is not None:
            undelivered = r["action"] == "CommandUndelivered"
            why = payload.get("reason") if undelivered else f"no answer in {payload.get('timeout_s')} s"
            lost.update(outcome="undelivered" if undelivered else "timeout", reason=why)


def _status_of(answer: dict[str, Any]) -> str | None:
    results = answer.get("clearTariffsResult")  # ClearTariffs: one status per tariff
    if isinstance(results, list) and results:
        return ", ".join(sorted({str(x.get("status")) for x in results}))
    results = answer.get("setVariableResult")  # SetVariables: one status per variable
    if isinstance(results, list) and results:
        return ", ".join(sorted({str(x.get("attributeStatus")) for x in results}))
    return None


def run(action: str, calls: list[tuple[str, dict[str, Any]]], refused: list[str], bootstrap: str | None, by: str,
        wait_s: float, json_out: bool) -> None:  # fmt: skip
    """Send ``action`` with each station's payload, wait, print; exit 1 when a station was not
    reached, did not answer or was refused."""
    settings = Settings.load(bootstrap=bootstrap)
    for _, payload in calls:
        problem = command_problem(action, payload)
        if problem is not None:
            fail(f"not sent: {problem}")
    results = send_and_wait(settings, [(s, action, p) for s, p in calls], by, wait_s) if calls else []
    results += [{"station_id": s, "action": action, "command_id": None,
                 "outcome": "refused", "status": None, "reason": NO_TARIFFS, "answer": None}
                for s in refused]  # fmt: skip
    results.sort(key=lambda o: o["station_id"])
    if json_out:
        print_json({"results": results})
    else:
        table = Table(title=f"{len(results)} stations")
        held = action == "GetTariffs"
        for column in ("station", "action", "outcome", "status", "reason", *(["tariffs held"] if held else [])):
            table.add_column(column)
        for o in results:
            table.add_row(o["station_id"], str(o["action"]), o["outcome"], str(o["status"] or "-"),
                          str(o["reason"] or "-"), *([_held(o["answer"])] if held else []))  # fmt: skip
        err.print(table)
    if any(o["outcome"] != "answered" for o in results):
        raise typer.Exit(1)


def _held(answer: dict[str, Any] | None) -> str:
    """A GetTariffs answer's assignments, a line each: id, kind, EVSEs, validFrom."""
    lines = [f"{t.get('tariffId')} {t.get('tariffKind', '')} EVSE {','.join(map(str, t.get('evseIds') or [])) or 'all'}"
             + (f" from {t['validFrom']}" if t.get("validFrom") else "")
             for t in (answer or {}).get("tariffAssignments") or ()]  # fmt: skip
    return "\n".join(lines) or "-"


def _split(api: str | None, stations: list[str]) -> tuple[list[str], list[str]]:
    """The stations to send to, and those the twin knows speak OCPP 2.0.1."""
    old = [s for s in stations if _protocol(api, s) == "ocpp2.0.1"]
    return [s for s in stations if s not in old], old


def _tariff(file: str) -> dict[str, Any]:
    try:
        return load(file)
    except TariffError as exc:
        fail(f"not a valid OCPP 2.1 tariff: {exc}", 2)


# -- the commands ----------------------------------------------------------------------------------


@tariff_app.command("set")
def set_default(
    args: Annotated[list[str], typer.Argument(
        metavar="STATION... FILE",
        help="The stations (none with --all or --site), then a tariff file (OCPP 2.1 TariffType, JSON).")],
    evse: Evse = None,
    every: All = False,
    site: SiteOpt = None,
    api: Api = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    wait: Wait = 30.0,
    by: By = "cli",
    json_out: Json = False,
) -> None:
    """Set a default tariff (SetDefaultTariff) on stations and print each one's answer:
    Accepted, Rejected, TooManyElements, ConditionNotSupported, DuplicateTariffId.

    The file is checked against OCPP 2.1's TariffType first; an error names the field.
    Stations the twin knows speak OCPP 2.0.1 are not sent anything: they have no tariffs.
    Exit 1 when a station did not answer, was not connected or speaks 2.0.1.
    """
    *stations, file = args
    tariff = _tariff(file)
    targets = _targets(stations, every, site, api, Settings.load(bootstrap=bootstrap))
    send, old = _split(api, targets)
    payload = {"evseId": evse or 0, "tariff": tariff}
    run("SetDefaultTariff", [(s, payload) for s in send], old, bootstrap, by, wait, json_out)


def zone_call(zone: str) -> dict[str, Any]:
    """SetVariables of a station's clock's zone (``ClockCtrlr.TimeZone``)."""
    component, variable = CLOCK_ZONE
    return {"setVariableData": [{"component": {"name": component}, "variable": {"name": variable},
                                 "attributeValue": zone}]}  # fmt: skip


@tariff_app.command("zone")
def zone(
    args: Annotated[list[str], typer.Argument(
        metavar="STATION... ZONE",
        help="The stations (none with --all or --site), then a time zone (IANA: Europe/Berlin).")],
    every: All = False,
    site: SiteOpt = None,
    api: Api = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    wait: Wait = 30.0,
    by: By = "cli",
    json_out: Json = False,
) -> None:
    """Set stations' clock's time zone (SetVariables ClockCtrlr.TimeZone) and print each
    one's answer. The times of day and days of the week of a tariff's conditions are the
    station's local time: the station, the twin, central cost and `twin report tariffs` read
    them in the zone the log shows the station accepted, in UTC where it shows none.
    `twin up --simulate` sets each simulated station's zone from the inventory's address."""
    *stations, name = args
    if known_zone(name) is None:
        fail(f"not a time zone: {name!r} (an IANA name such as Europe/Berlin)", 2)
    targets = _targets(stations, every, site, api, Settings.load(bootstrap=bootstrap))
    run("SetVariables", [(s, zone_call(name)) for s in targets], [], bootstrap, by, wait, json_out)


@tariff_app.command("change")
def change(
    transaction: Annotated[str, typer.Argument(help="The transaction id.")],
    file: Annotated[str, typer.Argument(help="A tariff file (OCPP 2.1 TariffType, JSON).")],
    station: Annotated[str | None, typer.Option(
        "--station", help="The station running it (default: the twin's, found through the API).")] = None,
    api: Api = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    wait: Wait = 30.0,
    by: By = "cli",
    json_out: Json = False,
) -> None:
    """Change a running transaction's tariff (ChangeTransactionTariff) and print the answer:
    Accepted, Rejected, TooManyElements, ConditionNotSupported, TxNotFound, NoCurrencyChange."""
    tariff = _tariff(file)
    if station is None:
        station = _running(api, transaction)
        if station is None:
            fail(f"no station of the twin runs transaction {transaction!r}; give --station")
    send, old = _split(api, [station])
    run("ChangeTransactionTariff", [(s, {"transactionId": transaction, "tariff": tariff}) for s in send], old,
        bootstrap, by, wait, json_out)  # fmt: skip


def _running(api: str | None, transaction: str) -> str | None:
    listing = api_get(api, "/v1/stations", absent=True)
    for row in (listing or {}).get("stations", ()):
        twin = api_get(api, f"/v1/stations/{row['station_id']}", absent=True) or {}
        for evse in (twin.get("evses") or {}).values():
            if (evse.get("transaction") or {}).get("id") == transaction:
                return str(row["station_id"])
    return None


@tariff_app.command("clear")
def clear(
    stations: Annotated[list[str] | None, typer.Argument(help="The stations (none with --all or --site).")] = None,
    tariff_id: Annotated[list[str] | None, typer.Option("--tariff-id", help="Only these tariffs (repeat).")] = None,
    evse: Evse = None,
    every: All = False,
    site: SiteOpt = None,
    api: Api = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    wait: Wait = 30.0,
    by: By = "cli",
    json_out: Json = False,
) -> None:
    """Clear tariffs (ClearTariffs): all of them, or those named, on an EVSE or all; prints
    each station's results (Accepted, Rejected, NoTariff)."""
    targets = _targets(list(stations or []), every, site, api, Settings.load(bootstrap=bootstrap))
    send, old = _split(api, targets)
    payload: dict[str, Any] = {}
    if tariff_id:
        payload["tariffIds"] = list(tariff_id)
    if evse is not None:
        payload["evseId"] = evse
    run("ClearTariffs", [(s, payload) for s in send], old, bootstrap, by, wait, json_out)


@tariff_app.command("get")
def get(
    station: Annotated[str, typer.Argument(help="Station id.")],
    evse: Evse = None,
    api: Api = None,
    api_token: ApiToken = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    wait: Wait = 30.0,
    by: By = "cli",
    json_out: Json = False,
) -> None:
    """Ask a station which tariffs it holds (GetTariffs): ids, kinds, EVSEs, validFrom."""
    send, old = _split(api, [station])
    run("GetTariffs", [(s, {"evseId": evse or 0}) for s in send], old, bootstrap, by, wait, json_out)


@tariff_app.command("show")
def show(station: Annotated[str, typer.Argument(help="Station id.")], api: Api = None,
         api_token: ApiToken = None, json_out: Json = False) -> None:  # fmt: skip
    """What the twin knows: per EVSE the tariff in force, its price now and the next change,
    and a running transaction's cost (from the worker's API)."""
    twin = api_get(api, f"/v1/stations/{station}", absent=True)
    if twin is None or "error" in twin:
        fail(f"no twin of {station!r} at {Settings.load(api=api).api_url}" + (f": {twin['error']}" if twin else ""))
    evses = {k: {"tariff": e.get("tariff"), "cost": (e.get("transaction") or {}).get("cost"),
                 "transaction_id": (e.get("transaction") or {}).get("id")}
             for k, e in sorted((twin.get("evses") or {}).items())}  # fmt: skip
    zone = (twin.get("tariffs") or {}).get("time_zone")
    out = {"station_id": station, "protocol": twin.get("protocol"), "as_of": twin.get("as_of"), "evses": evses,
           "time_zone": zone or "UTC", "time_zone_known": zone is not None,
           "installed": {k: [t.get("tariffId") for t in v]
                         for k, v in ((twin.get("tariffs") or {}).get("installed") or {}).items()}}  # fmt: skip
    if json_out:
        print_json(out)
        return
    if twin.get("protocol") == "ocpp2.0.1":
        err.print(f"{station} speaks OCPP 2.0.1: no tariffs")
    table = Table(title=f"{station} tariffs as of {twin.get('as_of')} (times of day in {out['time_zone']}"
                        f"{'' if zone else ': the log shows no zone'})")
    for column in ("EVSE", "tariff", "source", "per kWh", "per min", "idle/min", "fixed", "next change", "cost"):
        table.add_column(column)
    for k, e in evses.items():
        t = e["tariff"] or {}
        now = t.get("price_now") or {}
        nxt = t.get("price_next") or {}
        cost = e["cost"] or {}
        total = cost.get("total_incl_tax") if cost.get("total_incl_tax") is not None else cost.get("total_excl_tax")
        table.add_row(k, str(t.get("tariff_id") or "-"), str(t.get("source") or "-"), _money(now, "energy_per_kwh"),
                      _money(now, "time_per_min"), _money(now, "idle_per_min"), _money(now, "fixed_fee"),
                      f"{t.get('next_change_at')} -> {_money(nxt, 'energy_per_kwh')}" if t.get("next_change_at")
                      else "-",
                      _cost(total, cost) if cost else "-")  # fmt: skip
    err.print(table)


def _cost(total: Any, cost: dict[str, Any]) -> str:
    return f"{total} {cost.get('currency') or ''} ({cost.get('source')}{', final' if cost.get('final') else ''})"


def _money(price: dict[str, Any], key: str) -> str:
    value = price.get(key)
    return "-" if value is None else f"{value:g}"
