"""``twin control``: smart charging, evaluated in virtual time (``simulate``) and explained
(``explain``); ``twin controller`` is the process that plans live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from twin import kafka_security
from twin.cli.app import (
    Bootstrap,
    Json,
    KafkaConfig,
    TwinTyper,
    Verbose,
    app,
    err,
    fail,
    iso_time,
    print_json,
    reachable,
    setup_logging,
)
from twin.settings import Settings
from twin.sites import Site

control_app = TwinTyper(
    help="Adaptive smart charging: evaluate policies on sessions, explain the controller's last plan, "
    "set an operator's limit.",
    no_args_is_help=True,
)
app.add_typer(control_app, name="control")

POLICY_HELP = ("adaptive (twin's planner: a linear programme over the EVs present, by departure), or a textbook "
               "baseline as ACN-Sim runs it: uncontrolled, edf (earliest deadline first), llf (least laxity "
               "first), round-robin (equal shares); 'all' compares every one, and the offline optimum")  # fmt: skip


@control_app.command("simulate")
def control_simulate(
    sessions: Annotated[Path, typer.Argument(help="A CSV of session_id,evse_id,arrival,departure,energy_kwh,max_kw "
                                                  "(times ISO-8601 UTC), optionally v2g,max_discharge_kw.")],
    site_limit_kw: Annotated[float, typer.Option("--site-limit-kw", min=0.0, help="The site's import limit, kW.")],
    step_s: Annotated[int, typer.Option("--step-s", min=1, help="Seconds between planning decisions.")] = 300,
    policy: Annotated[str, typer.Option(help=POLICY_HELP)] = "adaptive",
    export_limit_kw: Annotated[float | None, typer.Option(help="The site's export limit, kW (default none).")] = None,
    json_out: Json = False,
) -> None:
    """Play charging sessions through a policy in virtual time (no broker, no websockets), with
    the same planning code as the live controller: ideal EVs arrive and leave as the CSV
    says, and at each step the policy sees only the EVs present. For evaluating policies and
    for sizing a grid connection.

    A session's demand is met when it received its request within 0.1 kWh."""
    import math

    from twin.control import evaluate
    from twin.control.sessions import SessionsError, read

    names = [*evaluate.POLICIES, "offline"] if policy == "all" else [policy]
    unknown = [n for n in names if n not in evaluate.POLICIES and n != "offline"]
    if unknown:
        fail(f"unknown policy {unknown[0]!r}: one of {', '.join(evaluate.POLICIES)}, offline or all", code=2)
    try:
        rows = read(sessions)
    except SessionsError as exc:
        fail(str(exc), code=2)
    export = math.inf if export_limit_kw is None else export_limit_kw
    results = []
    with err.status(f"playing {len(rows)} sessions") as status:
        for name in names:
            status.update(f"playing {len(rows)} sessions through {name}")
            if name == "offline":
                results.append(evaluate.offline(rows, site_limit_kw, step_s, export))
            else:
                results.append(evaluate.run(rows, site_limit_kw, step_s, name, export))
    if json_out:
        documents = [r.document() for r in results]
        print_json(documents[0] if len(documents) == 1 else {"policies": documents})
        return
    table = Table(title=f"{len(rows)} sessions, site limit {site_limit_kw:g} kW, a decision every {step_s} s")
    for column in ("policy", "energy share", "demands met", "delivered kWh", "peak kW", "decision ms p50/p95/max",
                   "export kWh"):  # fmt: skip
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(r.policy, f"{r.energy_share:.1%}", f"{r.demands_met_share:.0%}",
                      f"{r.energy_delivered_kwh:,.1f} / {r.energy_requested_kwh:,.1f}", f"{r.peak_kw:,.1f}",
                      f"{r.decision_ms_p50:.1f} / {r.decision_ms_p95:.1f} / {r.decision_ms_max:.1f}",
                      f"{r.export_kwh:,.1f}")  # fmt: skip
    err.print(table)
    for r in results[:1] if len(results) > 1 else results:
        err.print(chart(r.site_kw, site_limit_kw, step_s, f"site power, {r.policy}"))


BARS = " ▁▂▃▄▅▆▇█"


def chart(series: list[float], limit: float, step_s: int, title: str, width: int = 96) -> str:
    """A one-line-per-row chart of the site's power over the run against its limit: each
    column the mean over its steps, '│' where the limit is, '!' above it."""
    if not series:
        return f"{title}: nothing to show"
    per = max(1, -(-len(series) // width))
    cols = [max(series[i : i + per]) for i in range(0, len(series), per)]
    top = max(max(cols), limit) or 1.0
    rows = 6
    lines = [f"{title} (each column {per * step_s / 60:g} min, top {top:,.0f} kW, limit {limit:,.0f} kW)"]
    for level in range(rows, 0, -1):
        low, high = top * (level - 1) / rows, top * level / rows
        line = ""
        for kw in cols:
            if kw > limit + 1e-6 and kw > low:
                line += "!"
            elif kw >= high:
                line += "█"
            elif kw > low:
                line += BARS[int((kw - low) / (high - low) * (len(BARS) - 1))]
            else:
                line += "─" if low <= limit < high else " "
        lines.append(f"{high:8,.0f} │{line}")
    return "\n".join(lines)


SITES_HELP = ("A sites file: a JSON list of {site_id, ean, import_limit_kw, export_limit_kw, stations}. Default: "
              "the sites of the station inventory beside --archive (which `twin simulate` writes). (env TWIN_SITES)")
Sites = Annotated[str | None, typer.Option("--sites", help=SITES_HELP)]
Archive = Annotated[str | None, typer.Option(help="The archive whose station inventory (_stations.json) names the "
                                             "sites and the EVSEs' rated power. (env TWIN_ARCHIVE)")]


def load_sites(settings: Settings) -> tuple[list[Site], dict[str, dict[str, object]]]:
    """The sites and the station inventory, or one clear line and exit 2."""
    from twin.captures import inventory_path
    from twin.sites import SitesError, load

    inventory_file = inventory_path(settings.archive) if "://" not in settings.archive else None
    try:
        sites = load(settings.sites or None, inventory_file)
    except SitesError as exc:
        fail(str(exc), code=2)
    inventory: dict[str, dict[str, object]] = {}
    if inventory_file is not None and inventory_file.is_file():
        import orjson

        rows = orjson.loads(inventory_file.read_bytes())
        inventory = {str(r.get("station_id")): r for r in rows if isinstance(r, dict)}
    return sites, inventory


@app.command()
def controller(
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    sites: Sites = None,
    archive: Archive = None,
    step_s: Annotated[float, typer.Option("--step-s", min=1.0, help="Seconds of station time between plans.")] = 300.0,
    time_scale: Annotated[float, typer.Option(min=0.001, help="How much faster than the wall clock the fleet's clock "
                                              "runs (a simulated fleet at --speed X: X).")] = 1.0,
    default_kwh: Annotated[float, typer.Option(min=0.0, help="What an EV that sent no charging needs is assumed to "
                                               "want, kWh.")] = 20.0,
    default_stay_h: Annotated[float, typer.Option(min=0.01, help="How long it is assumed to stay from the start of "
                                                  "its transaction, hours.")] = 4.0,
    central_cost: Annotated[bool, typer.Option("--central-cost", help="Also send CostUpdated with the running "
                                               "cost of each transaction whose station reports none itself, worked "
                                               "out from the twin and the tariff it started with, and its final "
                                               "cost once it ended.")] = False,
    cost_interval_s: Annotated[float, typer.Option("--cost-interval-s", min=1.0, help="Seconds of station time "
                                                   "between a transaction's CostUpdated.")] = 60.0,
    verbose: Verbose = False,
) -> None:
    """Plan every site's charging live and send the plans to the stations.

    Reads the twins (twin.state) and grid signals (grid.signals); for each site, plans the
    power of every EV plugged in under the limit in force (twin's adaptive planner: energy by
    each EV's departure, the site's import never above its limit; V2G EVs give back where the
    site is asked to export) and sends each charging EVSE a TxProfile through ocpp.commands,
    so every plan is in the log and every answer is folded. The explanation of each plan
    goes to control.plans (`twin control explain SITE`).

    It knows only what a live CSMS knows: the EVs plugged in now and what each asked for in
    NotifyEVChargingNeeds. An EV that asked nothing is assumed to want --default-kwh by
    --default-stay-h after its transaction started, at its EVSE's rated power. An EVSE that
    rejects a profile, or never answers, is counted at its maximum and planned around, and
    raises an alert. It re-plans on an arrival, a departure, new needs, a profile not
    accepted, a change of the limit in force, and at least every --step-s.

    With --central-cost it is also the CSMS's cost: for each transaction on a station that
    reports no costDetails, the cost so far (the tariff it started with, the readings in its
    twin, cut at each price change as the station and `twin report tariffs` cut it) is sent
    as CostUpdated every --cost-interval-s when it changed, and the final cost once the
    transaction ended. Times of day are the station's local time: the ClockCtrlr.TimeZone the
    log shows it was set to (`twin tariff zone`), UTC where it shows none."""
    import asyncio
    import signal

    from twin.cli.gateway import resolve_bootstrap
    from twin.control.controller import Clock, Controller, run
    from twin.control.needs import Defaults

    setup_logging(verbose)
    settings = Settings.load(bootstrap=bootstrap, sites=sites, archive=archive)
    found, inventory = load_sites(settings)
    if not found:
        err.print("controller: no sites (give --sites FILE, or an archive whose inventory names them); waiting idle")
    target, embedded = resolve_bootstrap(settings, "controller")
    brain = Controller(found, inventory, step_s, Clock(time_scale), Defaults(default_kwh, default_stay_h))
    err.print(f"controller: {len(found)} sites ({', '.join(s.site_id for s in found[:5])}"
              f"{', ...' if len(found) > 5 else ''}), broker {target}")  # fmt: skip

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, target, brain, stop, cost_interval_s if central_cost else None)

    try:
        asyncio.run(main())
    finally:
        if embedded is not None:
            embedded.stop()


@control_app.command("explain")
def control_explain(
    site: Annotated[str, typer.Argument(help="The site id.")],
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    json_out: Json = False,
) -> None:
    """Print the controller's last plan for SITE: per EVSE what its EV needs and by when, the
    power planned now, and why."""
    settings = Settings.load(bootstrap=bootstrap)
    target = reachable(settings, ("Read", settings.topics.plans))
    plan = latest_plan(settings, target, site)
    if plan is None:
        fail(f"no plan for site {site!r} on {settings.topics.plans} (is `twin controller` running, and is "
             f"{site!r} one of its sites?)")  # fmt: skip
    if json_out:
        print_json(plan)
        return
    limit = plan["limit"]
    err.print(f"site {site}, planned at {plan['planned_at']} ({plan['decision_ms']:.1f} ms, {plan['status']}): "
              f"limit {limit['import_kw']:g} kW import / {limit['export_kw']:g} kW export ({limit['source']}); "
              f"planned now {plan['plan_import_kw']:g} kW in, {plan['plan_export_kw']:g} kW out")  # fmt: skip
    table = Table()
    for column in ("station", "evse", "needs kWh", "departure", "max kW", "planned kW", "profile", "why"):
        table.add_column(column)
    for e in plan["evses"]:
        table.add_row(e["station_id"], str(e["evse_id"]), f"{e['need_kwh']:.1f}", e["departure"][11:16],
                      f"{e['max_kw']:g}", f"{e['plan_kw']:.1f}", str(e.get("profile_status") or "sent"),
                      e["why"])  # fmt: skip
    err.print(table)


def latest_plan(settings: Settings, bootstrap: str, site: str) -> dict[str, Any] | None:
    """The newest record for ``site`` on control.plans."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=2000,
                             **kafka_security.kafka_python())
    try:
        topic = settings.topics.plans
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not partitions:
            return None
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        found = None
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    if record.key == site.encode() and record.value:
                        found = orjson.loads(record.value)
        return found
    finally:
        consumer.close()


START_HELP = ("From this ISO time (the stations' time). Default: now in the stations' time, as the site's last "
              "plan has it, else this machine's.")


@control_app.command("limit")
def control_limit(
    site: Annotated[str, typer.Argument(help="The site id.")],
    import_kw: Annotated[float | None, typer.Option(help="Import limit, kW; negative: the site is asked to export "
                                                    "at least that much.")] = None,
    export_kw: Annotated[float | None, typer.Option(min=0.0, help="Export limit, kW.")] = None,
    minutes: Annotated[float, typer.Option("--for", min=0.1, help="For how many minutes, from now.")] = 60.0,
    start: Annotated[str | None, typer.Option(callback=iso_time, help=START_HELP)] = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    json_out: Json = False,
) -> None:
    """Set a site's limit for a while, as an operator: a grid signal on grid.signals (protocol
    "operator"), obeyed by the controller like an OpenADR event and kept in the log."""
    from datetime import UTC, datetime

    from twin import envelope
    from twin.sites import EXPORT_LIMIT, IMPORT_LIMIT

    if import_kw is None and export_kw is None:
        fail("say which limit: --import-kw and/or --export-kw", code=2)
    begins = envelope.parse_ts(start) if start else None  # checked as given (iso_time)
    settings = Settings.load(bootstrap=bootstrap)
    target = reachable(settings, ("Write", settings.topics.signals), ("Read", settings.topics.plans))
    if begins is None:  # now in the stations' time: the site's last plan's clock (a simulated fleet's runs ahead)
        planned = (latest_plan(settings, target, site) or {}).get("planned_at")
        if not planned:  # a typo, or a controller not running yet: the limit is recorded all the same
            err.print(f"[yellow]warning:[/] no plan for site {site!r} on {settings.topics.plans} (is the id right? "
                      "`twin sites` lists them); the limit starts from this machine's clock")  # fmt: skip
        begins = envelope.parse_ts(planned) if planned else datetime.now(UTC)
    if begins.tzinfo is None:
        begins = begins.replace(tzinfo=UTC)
    import secrets

    import orjson
    from kafka import KafkaProducer

    event = f"operator-{secrets.token_hex(4)}"
    signals: list[dict[str, Any]] = []
    for kind, value in ((IMPORT_LIMIT, import_kw), (EXPORT_LIMIT, export_kw)):
        if value is None:
            continue
        signals.append({
            "site_id": site, "ean": None, "protocol": "operator", "program_id": "operator",
            "event_id": f"{event}-{kind.split('_')[0].lower()}", "modification_number": 0, "payload_type": kind,
            "unit": "KW", "currency": None,
            "intervals": [{"start": envelope.iso_ms(begins.timestamp()), "duration_s": minutes * 60, "value": value}],
            "received_at": envelope.iso_ms(), "status": "accepted", "reason": None,
        })  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=target, acks="all", **kafka_security.kafka_python(settings))
    for s in signals:
        producer.send(settings.topics.signals, key=site.encode(), value=orjson.dumps(s)).get(10)
    producer.close()
    if json_out:
        print_json({"signals": signals})
    else:
        what = ", ".join(f"{s['payload_type']} {s['intervals'][0]['value']:g} kW" for s in signals)
        err.print(f"site {site}: {what} for {minutes:g} min from {signals[0]['intervals'][0]['start']}")
