"""``twin sites``: every site's limit in force, where it comes from, and what it draws: live
from the worker's API, or rebuilt from the archive at any moment (``--capture A --at TS``),
as ``twin state`` shows a station."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from twin.cli.app import Json, app, err, fail, iso_time, print_json
from twin.cli.door import ApiToken
from twin.cli.twins import Api, api_get


@app.command()
def sites(
    site: Annotated[str | None, typer.Argument(help="One site id (default: every site).")] = None,
    api: Api = None,
    api_token: ApiToken = None,
    capture: Annotated[str | None, typer.Option("--capture", "--archive", "-c", help="Rebuild from this archive "
                                                "(its frames, grid signals and inventory) instead of asking the "
                                                "API.")] = None,  # fmt: skip
    at: Annotated[str | None, typer.Option(
        callback=iso_time,
        help="With --capture: as the API showed it at this moment (ISO time; default: the archive's last record)."),
    ] = None,  # fmt: skip
    sites_file: Annotated[str | None, typer.Option("--sites", help="With --capture: a sites file instead of the "
                                                   "archive's inventory. (env TWIN_SITES)")] = None,  # fmt: skip
    json_out: Json = False,
) -> None:
    """The sites' limits in force: live (`GET /v1/sites`), or rebuilt from the archive with
    --capture, at --at: the stations' twins folded up to that moment and the limit from the
    grid signals received by then, which is what the API said at that moment."""
    if at and not capture:
        fail("--at needs --capture (the live sites are the present)")
    if capture:
        moment, views = _rebuilt(capture, at, sites_file)
        if site is not None:
            views = [v for v in views if v["site_id"] == site]
            if not views:
                fail(f"no site {site!r} in {capture}")
        document: dict[str, Any] = {"at": moment, "sites": views}
    else:
        document = {"sites": [api_get(api, f"/v1/sites/{site}")] if site else api_get(api, "/v1/sites")["sites"]}
    if site is not None:
        document = {**document.pop("sites")[0], **({"at": document["at"]} if "at" in document else {})}
    if json_out:
        print_json(document)
        return
    shown = [document] if site is not None else document["sites"]
    table = Table(title=f"{len(shown)} sites" + (f" at {document.get('at')}" if document.get("at") else ""))
    for column in ("site", "import limit", "export limit", "source", "event", "import now", "export now", "EVSEs"):
        table.add_column(column)
    for v in shown:
        signal = v.get("signal") or {}
        table.add_row(v["site_id"], f"{v['import_limit_kw']:g} kW", f"{v['export_limit_kw']:g} kW", v["limit_source"],
                      str(signal.get("event_id") or "-"), f"{v['import_kw']:g} kW", f"{v['export_kw']:g} kW",
                      str(len(v["evses"])))  # fmt: skip
    err.print(table)


def _rebuilt(capture: str, at: str | None, sites_file: str | None) -> tuple[str | None, list[dict[str, Any]]]:
    from twin.analytics.grid import sites_of, views_at
    from twin.captures import CaptureError
    from twin.envelope import iso_ms, parse_ts
    from twin.settings import Settings
    from twin.sites import SitesError

    moment = parse_ts(at) if at else None  # checked as given (iso_time)
    if moment is not None and moment.tzinfo is None:
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    try:
        known = sites_of(capture, sites_file or Settings.load().sites)
        if not known:
            fail(f"no sites: {capture} has no station inventory with sites (_stations.json), and no --sites file")
        when, views = views_at(capture, known, moment)
    except (SitesError, CaptureError) as exc:
        fail(str(exc))
    return (iso_ms(when.timestamp()) if when else None), views
