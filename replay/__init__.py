"""The replay engine behind ``twin replay``: re-drive the stations of a capture against any
OCPP 2.1 / 2.0.1 CSMS, and compare its answers with the recorded ones."""

from replay.engine import Options, Results, run
from replay.plan import Script, Selection, scripts

__all__ = ["Options", "Results", "Script", "Selection", "run", "scripts"]
