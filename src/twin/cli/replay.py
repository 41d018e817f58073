"""``twin replay``: re-drive the stations of a capture against any CSMS."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from twin.cli.app import Bootstrap, Json, KafkaConfig, app, err, fail, iso_time, print_json, progress_bar
from twin.settings import Settings


def parse_speed(speed: str) -> float | None:
    if speed == "max":
        return None
    try:
        value = float(speed)
    except ValueError:
        fail(f"--speed takes a number (1 = real time, 60 = a minute a second) or 'max', not {speed!r}")
    if value <= 0:
        fail("--speed must be above 0")
    return value


@app.command()
def replay(
    capture: Annotated[
        str | None, typer.Argument(help="A .jsonl capture or Parquet archive; default: ocpp.frames.")
    ] = None,  # fmt: skip
    target: Annotated[
        str, typer.Option("--target", "-t", help="The CSMS: ws://host:port/path (the station id is appended).")
    ] = "",  # fmt: skip
    speed: Annotated[str, typer.Option(help="Recorded seconds per real second (1: as recorded), or 'max'.")] = "1",
    stations: Annotated[
        str | None, typer.Option(help="Only these stations: comma-separated globs, e.g. 'CS-000*,DC-*'.")
    ] = None,  # fmt: skip
    since: Annotated[
        str | None, typer.Option("--from", callback=iso_time, help="Only records captured at or after this ISO time.")
    ] = None,  # fmt: skip
    until: Annotated[
        str | None, typer.Option("--to", callback=iso_time, help="Only records captured at or before this ISO time.")
    ] = None,  # fmt: skip
    station_prefix: Annotated[
        str, typer.Option(help="Prepend to every station id, so replays do not collide with live stations.")
    ] = "",  # fmt: skip
    shift_to_now: Annotated[
        bool, typer.Option(help="Move every timestamp in the payloads so the replay starts now.")
    ] = False,  # fmt: skip
    call_timeout: Annotated[float, typer.Option(help="Seconds to wait for each answer.")] = 30.0,
    bootstrap: Bootstrap = None,
    kafka_config: KafkaConfig = None,
    json_out: Json = False,
) -> None:
    """Open one connection per station to --target with the recorded subprotocol, send the
    station's CALLs and SENDs in recorded order and timing (scaled by --speed), answer the
    target's calls with the recorded answers (or a schema-valid default), and report every
    answer whose status or error code differs from the recorded one.

    Exit status 0 when every call was answered as recorded, 1 otherwise.
    """
    from replay import Options, Selection, run, scripts
    from twin import captures

    if not target:
        fail("say which CSMS to drive: --target ws://host:port/ocpp")
    factor = parse_speed(speed)
    selection = Selection(
        stations=[g.strip() for g in stations.split(",") if g.strip()] if stations else None,
        since=since, until=until, prefix=station_prefix,
        shift_to=datetime.now(UTC) if shift_to_now else None,
    )  # fmt: skip
    try:
        if capture:
            records: Any = captures.read(capture)
        else:
            settings = Settings.load(bootstrap=bootstrap)
            records = captures.TopicLog(settings.bootstrap or f"{settings.host}:{settings.broker_port}",
                                        settings.topics.frames)  # fmt: skip
        plans = scripts(records, selection)
    except captures.CaptureError as exc:
        fail(str(exc))
    if not plans:
        fail("no station of the capture matches the selection (--stations, --from, --to)")
    total = sum(p.frames for p in plans)
    err.print(f"replaying {len(plans)} stations, {total:,} frames, against {target} at speed {speed}")
    with progress_bar() as progress:
        task = progress.add_task("frames sent", total=total)
        results = asyncio.run(
            run(plans, Options(target, factor, call_timeout=call_timeout), lambda n: progress.update(task, completed=n))
        )
    report(results, json_out)
    if results.mismatches or results.errors:
        raise typer.Exit(1)


def report(results: Any, json_out: bool) -> None:
    summary = results.summary()
    if json_out:
        print_json(summary)
        return
    err.print(
        f"{summary['stations']} stations, {summary['frames_sent']:,} frames sent, {summary['responses']:,} answers "
        f"in {summary['seconds']} s; rtt p50 {summary['rtt_p50_ms']} ms p99 {summary['rtt_p99_ms']} ms; "
        f"send timing error p50 {summary['send_timing_error_p50_ms']} ms p99 {summary['send_timing_error_p99_ms']} ms"
    )
    err.print(f"mismatches {summary['mismatches']}, errors {summary['errors']} "
              f"(timeouts {summary['timeouts']}, reconnects {summary['reconnects']})")  # fmt: skip
    for m in summary["mismatch_examples"][:10]:
        err.print(f"  mismatch {m['station_id']} {m['action']}: recorded {m['expected']}, got {m['got']}")
    for e in summary["error_examples"][:10]:
        err.print(f"  error {e.get('station_id', '')} {e['error']}: {e['detail']}")
