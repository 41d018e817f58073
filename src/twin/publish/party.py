"""Who publishes: the CPO's OCPI party (country code, party id), its name, and the time format
OCPI and DATEX II share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Party:
    country_code: str = "NL"  # ISO 3166-1 alpha-2, as OCPI's CredentialsRole says it
    party_id: str = "TWN"  # ISO 15118 operator id: three characters
    name: str = "Corridor Charging B.V."
    website: str = "https://corridor-charging.example"

    @property
    def emi3(self) -> str:
        """The operator part of an eMI3 EVSE id: ``NL*TWN``."""
        return f"{self.country_code}*{self.party_id}"


def iso(at: datetime) -> str:
    """UTC with milliseconds and ``Z``: RFC 3339 as OCPI wants it, and a DATEX II DateTime."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone(UTC)


def latest(*stamps: str | None) -> str | None:
    """The latest of ISO timestamps (compared as instants), None if there are none."""
    known = [s for s in stamps if s]
    return max(known, key=parse) if known else None
