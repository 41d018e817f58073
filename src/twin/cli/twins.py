"""``twin state``, ``twin fleet``, ``twin rebuild``: twins live from the API, or folded from
a capture (a ``.jsonl`` of envelopes or a Parquet archive) or from ``ocpp.frames``."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Annotated, Any

import orjson
import typer
from rich.table import Table

from twin import captures, fold
from twin.cli.app import Bootstrap, Json, KafkaConfig, app, err, fail, iso_time, print_json, progress_bar, reachable
from twin.cli.door import ApiToken
from twin.fold.engine import Record
from twin.rebuild import fold_capture as fold_file
from twin.rebuild import fold_records, processes_for
from twin.settings import Settings
from twin.tokens import TOKEN_ENV, headers

Api = Annotated[str | None, typer.Option("--api", help="URL of a worker's API (default http://127.0.0.1:6066).")]
Capture = Annotated[str | None, typer.Option("--capture", "-c", help="Fold this capture instead of asking the API.")]


def api_get(api: str | None, path: str, absent: bool = False) -> Any:
    """The API's answer; a 401 is one clear line. ``absent``: None where the API has no
    answer (an unknown station, no worker) instead of an error line."""
    import urllib.error  # here: 25 ms of every `twin rebuild` that never asks the API
    import urllib.request

    base = Settings.load(api=api).api_url
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{base}{path}", headers=headers()), timeout=10) as response:
            return orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            fail(f"{base}{path}: 401: the API wants a token (--api-token, or {TOKEN_ENV}; `twin token add`)")
        if absent:
            return None
        body = exc.read()
        try:
            message = orjson.loads(body).get("error", body.decode())
        except orjson.JSONDecodeError:
            message = body.decode(errors="replace")[:200]
        fail(f"{base}{path}: {exc.code} {message}")
    except (urllib.error.URLError, OSError, orjson.JSONDecodeError) as exc:
        if absent:
            return None
        fail(f"no twin API at {base} ({getattr(exc, 'reason', exc)}); is `twin worker` running?")


def fold_counted(records: Iterable[Record], label: str, total: int | None = None) -> tuple[dict[str, fold.Twin], int]:
    """Records folded with the one fold, a progress bar on stderr, and how many there were."""
    with progress_bar() as progress:
        task = progress.add_task(label, total=total)
        return fold_records(records, lambda n: progress.update(task, completed=n))


def fold_capture(
    path: str, until: str | None = None, stations: Collection[str] | None = None, processes: int | None = None
) -> tuple[dict[str, fold.Twin], int]:
    """Twins folded from a capture (of ``stations`` only, if given), and how many records it
    held; a large ``.jsonl`` in a process per core (:mod:`twin.rebuild`)."""
    try:
        parts = processes_for(path, processes)
        if stations is not None:
            parts = max(1, min(parts, len(stations)))  # a station's lines are all in one part
        # no refresh thread: the parts are forked while the bar is up
        with progress_bar(auto_refresh=False) as progress:
            label = f"folding {path}" + (f" in {parts} processes" if parts > 1 else "")
            task = progress.add_task(label, total=None)
            return fold_file(path, until=until, stations=stations, processes=parts,
                             progress=lambda n: progress.update(task, completed=n, refresh=True))  # fmt: skip
    except captures.CaptureError as exc:
        fail(str(exc))


@app.command()
def state(
    station: Annotated[str, typer.Argument(help="Station id.")],
    api: Api = None,
    api_token: ApiToken = None,
    capture: Capture = None,
    at: Annotated[
        str | None,
        typer.Option(callback=iso_time, help="With --capture: the twin as it was at this moment (ISO time)."),
    ] = None,
    json_out: Json = False,
) -> None:
    """One station's twin: live from the worker's API, or folded from a capture (time travel
    with --at)."""
    if at and not capture:
        fail("--at needs --capture (the live twin is the present)")
    if capture:
        twins, _ = fold_capture(capture, until=at, stations={station})
        if station not in twins:
            fail(f"no station {station!r} in {capture}" + (f" by {at}" if at else ""))
        twin = fold.public(twins[station])
    else:
        twin = api_get(api, f"/v1/stations/{station}")
    if json_out:
        print_json(twin)
        return
    table = Table(title=f"{station} as of {twin.get('as_of')}")
    for key in ("station_id", "protocol", "frames_folded"):
        table.add_row(key, str(twin.get(key)))
    table.add_row("online", str(twin["connection"].get("online")))
    table.add_row("identity", " ".join(f"{k}={v}" for k, v in twin["identity"].items() if v is not None))
    for evse_id, evse in sorted(twin.get("evses", {}).items()):
        energy = evse.get("energy") or {}
        tx = evse.get("transaction") or {}
        table.add_row(f"EVSE {evse_id}", f"{evse.get('status')}  {energy.get('direction', 'idle')}  "
                      f"{energy.get('power_w', 0) or 0:.0f} W  tx {tx.get('id')} {tx.get('state', '')}")  # fmt: skip
    table.add_row(
        "reservations", ", ".join(f"{k}:{v['status']}" for k, v in twin.get("reservations", {}).items()) or "-"
    )
    err.print(table)


@app.command()
def fleet(api: Api = None, api_token: ApiToken = None, capture: Capture = None, json_out: Json = False) -> None:
    """All twins, a row each: live from the API, or folded from a capture."""
    from streams.views import row, summary

    if capture:
        twins, _ = fold_capture(capture)
        rows = sorted((row(t) for t in twins.values()), key=lambda r: r["station_id"])
    else:
        rows = api_get(api, "/v1/stations")["stations"]
    if json_out:
        print_json({"stations": rows, "summary": summary(rows)})
        return
    table = Table(title=f"{len(rows)} stations")
    for column in ("station", "protocol", "online", "evses", "charging", "discharging", "faulted", "as of"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["station_id"], str(r["protocol"]), "yes" if r["online"] else "no", str(r["evses"]),
                      str(r["charging"]), str(r["discharging"]), str(r["faulted"]), str(r["as_of"]))  # fmt: skip
    err.print(table)


@app.command()
def rebuild(
    capture: Annotated[
        str | None, typer.Argument(help="A .jsonl capture or Parquet archive; default: ocpp.frames.")
    ] = None,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    verify: Annotated[bool, typer.Option("--verify", help="Compare with the live twins of the API.")] = False,
    api: Api = None,
    api_token: ApiToken = None,
    processes: Annotated[
        int | None,
        typer.Option("--processes", "-j", min=1, show_default=False,
                     help="Fold a .jsonl capture in this many processes, its stations shared among them "
                     "(default: one per core for a capture of 64 MiB or more, else one)."),
    ] = None,  # fmt: skip
    json_out: Json = False,
) -> None:
    """Fold a capture, or ocpp.frames from the beginning, into twins with the same fold the
    worker runs; --verify lists every field where they differ from the live twins."""
    if capture:
        twins, n = fold_capture(capture, processes=processes)
    else:
        twins, n = fold_topic(Settings.load(bootstrap=bootstrap))
    public = {k: fold.public(v) for k, v in sorted(twins.items())}
    result: dict[str, Any] = {"stations": len(public), "frames": n}
    if verify:
        result["differences"] = [
            d
            for station, twin in public.items()
            for d in differences(station, twin, api_get(api, f"/v1/stations/{station}"))
        ]
    else:
        result["twins"] = public
    if json_out:
        print_json(result)
    elif verify:
        err.print(f"{n} frames, {len(public)} stations: {len(result['differences'])} differences")
        for d in result["differences"][:50]:
            err.print(f"  {d['station_id']} {d['field']}: rebuilt {d['rebuilt']!r}, live {d['live']!r}")
        if result["differences"]:
            raise typer.Exit(1)
    else:
        err.print(f"{n} frames folded into {len(public)} twins (--json prints them)")


def differences(station: str, rebuilt: Any, live: Any, path: str = "") -> list[dict[str, Any]]:
    """Field by field, where two twins differ."""
    if isinstance(rebuilt, dict) and isinstance(live, dict):
        out = []
        for key in sorted(set(rebuilt) | set(live)):
            out += differences(station, rebuilt.get(key), live.get(key), f"{path}.{key}" if path else key)
        return out
    if rebuilt != live:
        return [{"station_id": station, "field": path, "rebuilt": rebuilt, "live": live}]
    return []


def fold_topic(settings: Settings) -> tuple[dict[str, fold.Twin], int]:
    """Fold ocpp.frames from the beginning to its end as it is now (records still arriving
    while it reads are folded too)."""
    from twin.captures import TopicLog

    target = reachable(settings, ("Read", settings.topics.frames))
    log = TopicLog(target, settings.topics.frames)
    return fold_counted(log, f"folding {settings.topics.frames}", total=log.total)
