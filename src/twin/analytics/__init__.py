"""Analytics over the frame log: derived tables (DuckDB views, Polars frames) and reports.

Every function takes a capture (a Parquet archive directory or a ``.jsonl`` of envelopes),
drops duplicate ``(conn_id, seq)`` records (the log is at-least-once) and keeps what the
gateway captured as valid.
"""

from twin.analytics.energy import energy_days_duckdb, energy_days_polars
from twin.analytics.frames import connect, frames_polars
from twin.analytics.sessions import sessions_duckdb, sessions_polars

__all__ = ["connect", "energy_days_duckdb", "energy_days_polars", "frames_polars", "sessions_duckdb", "sessions_polars"]
