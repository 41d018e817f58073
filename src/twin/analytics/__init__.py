"""Analytics over the frame log: derived tables (DuckDB views, Polars frames) and reports.

Every function takes a capture (a Parquet archive directory or a ``.jsonl`` of envelopes),
drops duplicate ``(conn_id, seq)`` records (the log is at-least-once) and keeps what the
gateway captured as valid. DuckDB and Polars are imported when a report runs, not when the
CLI starts: ``reports`` names the reports without them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_LAZY = {
    "connect": "frames", "frames_polars": "frames",
    "energy_days_duckdb": "energy", "energy_days_polars": "energy",
    "sessions_duckdb": "sessions", "sessions_polars": "sessions",
}  # fmt: skip

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"twin.analytics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'twin.analytics' has no attribute {name!r}")
