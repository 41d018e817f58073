"""The Streamlit app (``twin dashboard``): the live twins from the worker's API, and
analytics over the archive through ``twin.analytics``.

This module imports no Streamlit: the CLI uses it to find the app and the archive."""

from __future__ import annotations

from pathlib import Path

APP = Path(__file__).resolve().parent / "entry" / "app.py"
"""The Streamlit entry point (it runs ``app.py``; see its docstring for why it is apart)."""
SAMPLE = Path(__file__).resolve().parent.parent / "datasets" / "sample"
"""The committed sample dataset, in a checkout of the repository."""


def archive_path(configured: str | None, default: str) -> str:
    """The archive to show: the configured one (even if it does not exist yet: a worker is
    about to write it); else the default if it exists; else the committed sample."""
    if configured:
        return configured
    if Path(default).exists() or not SAMPLE.exists():
        return default
    return str(SAMPLE)
