"""``twin control``: smart charging, evaluated in virtual time (``simulate``) and explained
(``explain``); ``twin controller`` is the process that plans live."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from twin.cli.app import Json, app, err, fail, print_json

control_app = typer.Typer(
    help="Adaptive smart charging: evaluate policies on sessions, explain the controller's last plan.",
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
