"""The simulated fleet: charging pools along European corridors, and their stations.

The composition is set by station index, not drawn, so that even a dozen stations hold
every kind of hardware: DC on two in five, bidirectional (``AC_BPT`` / ``DC_BPT``) on one
in six, OCPP 2.0.1 on one in four (never bidirectional: V2G needs 2.1). What is drawn
(power ratings, vendors, positions along a corridor) comes from the seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

CORRIDORS: dict[str, list[tuple[str, float, float]]] = {
    # TEN-T core network corridors, by the cities they pass (name, lat, lon)
    "North Sea-Rhine-Mediterranean": [("Amsterdam", 52.37, 4.90), ("Utrecht", 52.09, 5.12),
                                      ("Cologne", 50.94, 6.96), ("Frankfurt", 50.11, 8.68),
                                      ("Basel", 47.56, 7.59), ("Lyon", 45.76, 4.84)],
    "Scandinavian-Mediterranean": [("Hamburg", 53.55, 9.99), ("Hanover", 52.37, 9.73),
                                   ("Nuremberg", 49.45, 11.08), ("Munich", 48.14, 11.58),
                                   ("Innsbruck", 47.27, 11.40), ("Verona", 45.44, 10.99)],
    "Atlantic": [("Paris", 48.86, 2.35), ("Orleans", 47.90, 1.90), ("Tours", 47.39, 0.69),
                 ("Bordeaux", 44.84, -0.58), ("Bilbao", 43.26, -2.93), ("Madrid", 40.42, -3.70)],
    "Baltic-Adriatic": [("Gdansk", 54.35, 18.65), ("Warsaw", 52.23, 21.01), ("Katowice", 50.26, 19.02),
                        ("Vienna", 48.21, 16.37), ("Graz", 47.07, 15.44), ("Ljubljana", 46.06, 14.51)],
}  # fmt: skip

VENDORS = {
    "AC": [("Alfen", "Eve Double Pro-line"), ("ABB", "Terra AC W22"), ("Wallbox", "Commander 2")],
    "DC": [("ABB", "Terra 184"), ("Kempower", "S-Series"), ("Alpitronic", "HYC300"), ("Tritium", "PKM150")],
}
AC_KW = (11.0, 22.0)
DC_KW = (50.0, 150.0, 150.0, 300.0, 400.0)  # 150 kW most common on corridors


@dataclass(frozen=True)
class Station:
    index: int
    station_id: str
    pool_id: str
    corridor: str
    lat: float
    lon: float
    kind: str  # "AC" or "DC"
    max_kw: float
    evses: int
    bidirectional: bool
    protocol: str  # "ocpp2.1" or "ocpp2.0.1"
    vendor: str
    model: str
    firmware: str
    serial: str
    iso15118: bool  # ISO 15118-20 Plug & Charge capable

    @property
    def transfer_mode(self) -> str:
        if self.bidirectional:
            return "DC_BPT" if self.kind == "DC" else "AC_BPT"
        return "DC" if self.kind == "DC" else "AC_three_phase"


@dataclass(frozen=True)
class Pool:
    pool_id: str
    name: str
    corridor: str
    lat: float
    lon: float


SITE_SHARE = 0.6
"""A pool's grid connection imports at most this share of its stations' rated power (rounded
up to 5 kW): enough for most hours, binding when every bay charges at once, as operators size
them; it may export half as much."""


def inventory(stations: int, seed: int, prefix: str = "CS") -> list[dict[str, object]]:
    """The fleet's static data, a row per station with its pool and its pool's site (the
    grid connection: ``site_id``, ``ean``, ``import_limit_kw``, ``export_limit_kw``): what an
    operator keeps outside OCPP (and AFIR's static data), and what per-pool reports, maps and
    the smart-charging controller need."""
    from twin.sites import ean_of

    pools, fleet = build(stations, seed, prefix)
    by_id = {p.pool_id: p for p in pools}
    rated: dict[str, float] = {}
    for s in fleet:
        rated[s.pool_id] = rated.get(s.pool_id, 0.0) + s.max_kw * s.evses
    sites = {}
    for number, pool in enumerate(pools, 1):
        limit = 5 * math.ceil(rated.get(pool.pool_id, 0.0) * SITE_SHARE / 5)
        sites[pool.pool_id] = {"site_id": f"SITE-{number:04d}", "ean": ean_of(number),
                               "import_limit_kw": float(limit), "export_limit_kw": float(5 * math.ceil(limit / 10))}
    places = {p.pool_id: _place(number, p) for number, p in enumerate(pools, 1)}
    return [{**asdict(s), "pool_name": by_id[s.pool_id].name, "transfer_mode": s.transfer_mode, **sites[s.pool_id],
             **places[s.pool_id], "connector": _connector(s)}
            for s in fleet]  # fmt: skip


COUNTRIES = {"Amsterdam": "NL", "Utrecht": "NL", "Cologne": "DE", "Frankfurt": "DE", "Basel": "CH", "Lyon": "FR",
             "Hamburg": "DE", "Hanover": "DE", "Nuremberg": "DE", "Munich": "DE", "Innsbruck": "AT", "Verona": "IT",
             "Paris": "FR", "Orleans": "FR", "Tours": "FR", "Bordeaux": "FR", "Bilbao": "ES", "Madrid": "ES",
             "Gdansk": "PL", "Warsaw": "PL", "Katowice": "PL", "Vienna": "AT", "Graz": "AT", "Ljubljana": "SI"}
ZONES = {"NL": "Europe/Amsterdam", "DE": "Europe/Berlin", "CH": "Europe/Zurich", "FR": "Europe/Paris",
         "AT": "Europe/Vienna", "IT": "Europe/Rome", "ES": "Europe/Madrid", "PL": "Europe/Warsaw",
         "SI": "Europe/Ljubljana"}  # fmt: skip
OPERATOR = {"name": "Corridor Charging B.V.", "website": "https://corridor-charging.example",
            "phone": "+31 20 000 0000"}


def _place(number: int, pool: Pool) -> dict[str, object]:
    """A pool's static data beyond OCPP (AFIR Art. 20's static data): its address (the nearest
    corridor town's country and time zone), opening hours, parking, energy mix and operator.
    Set by the pool's number, so the same fleet always gets the same values."""
    town = min((t for towns in CORRIDORS.values() for t in towns),
               key=lambda t: (t[1] - pool.lat) ** 2 + (t[2] - pool.lon) ** 2)[0]  # fmt: skip
    country = COUNTRIES[town]
    green = number % 3 != 0
    mix = ([{"source": "WIND", "percentage": 60.0}, {"source": "SOLAR", "percentage": 40.0}] if green
           else [{"source": "GENERAL_GREEN", "percentage": 45.0}, {"source": "GAS", "percentage": 35.0},
                 {"source": "COAL", "percentage": 20.0}])  # fmt: skip
    return {
        "address": {"street": f"Rastplatz {pool.name.split(' ')[0]} {number}", "city": town,
                    "postal_code": f"{(number * 7919) % 90000 + 10000}", "country": country,
                    "time_zone": ZONES[country]},
        "opening_hours": "24/7" if number % 4 else "Mo-Su 06:00-22:00",
        "parking": {"type": "ALONG_MOTORWAY", "restrictions": ["EV_ONLY"], "free_minutes": 0},
        "energy_mix": {"is_green_energy": green, "supplier": "Corridor Energy", "sources": mix},
        "operator": OPERATOR,
    }  # fmt: skip


def _connector(s: Station) -> dict[str, object]:
    """Each EVSE's one connector: CCS2 on a cable for DC, a Type 2 socket (22 kW: three phases) for AC."""
    if s.kind == "DC":
        return {"standard": "IEC_62196_T2_COMBO", "format": "CABLE", "power_type": "DC", "max_voltage": 920,
                "max_amperage": int(math.ceil(s.max_kw * 1000 / 400))}  # fmt: skip
    return {"standard": "IEC_62196_T2", "format": "SOCKET", "power_type": "AC_3_PHASE", "max_voltage": 400,
            "max_amperage": 32 if s.max_kw > 11 else 16}  # fmt: skip


def build(stations: int, seed: int, prefix: str = "CS") -> tuple[list[Pool], list[Station]]:
    """``stations`` stations in pools of 2 to 6, the pools spread along the corridors."""
    rng = random.Random(f"fleet:{seed}")
    corridors = list(CORRIDORS)
    pools: list[Pool] = []
    fleet: list[Station] = []
    index = 0
    while index < stations:
        corridor = corridors[len(pools) % len(corridors)]
        towns = CORRIDORS[corridor]
        leg = rng.randrange(len(towns) - 1)
        f = rng.random()
        (town, lat0, lon0), (town1, lat1, lon1) = towns[leg], towns[leg + 1]
        lat, lon = lat0 + (lat1 - lat0) * f, lon0 + (lon1 - lon0) * f
        name = f"{town}-{town1} {round(f * 100)}%"  # how far along that leg
        pool = Pool(f"POOL-{len(pools) + 1:04d}", name, corridor, round(lat, 4), round(lon, 4))
        pools.append(pool)
        for _ in range(min(rng.randint(2, 6), stations - index)):
            fleet.append(_station(index, pool, rng, prefix))
            index += 1
    return pools, fleet


def _station(index: int, pool: Pool, rng: random.Random, prefix: str) -> Station:
    kind = "DC" if index % 5 in (0, 2) else "AC"
    protocol = "ocpp2.0.1" if index % 4 == 3 else "ocpp2.1"
    bidirectional = protocol == "ocpp2.1" and index % 6 == 1
    vendor, model = rng.choice(VENDORS[kind])
    max_kw = rng.choice(DC_KW if kind == "DC" else AC_KW)
    return Station(
        index=index,
        station_id=f"{prefix}-{index + 1:05d}",
        pool_id=pool.pool_id,
        corridor=pool.corridor,
        lat=round(pool.lat + rng.uniform(-2e-4, 2e-4), 6),
        lon=round(pool.lon + rng.uniform(-2e-4, 2e-4), 6),
        kind=kind,
        max_kw=max_kw,
        evses=2 if kind == "AC" or rng.random() < 0.7 else 1,
        bidirectional=bidirectional,
        protocol=protocol,
        vendor=vendor,
        model=model,
        firmware=f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 20)}",
        serial=f"SN{rng.getrandbits(40):010X}",
        iso15118=kind == "DC" or bidirectional or index % 3 == 0,
    )
