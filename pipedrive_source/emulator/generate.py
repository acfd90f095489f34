"""Deterministic synthetic company: records of every table from (seed, scale).

Each table draws from its own `random.Random` seeded by (seed, table name), so tables are independent
and the whole company is reproducible. History spans six years before the emulator clock; ids grow with
`add_time`; `update_time` falls anywhere between `add_time` and the clock, and about one record in eight
takes its `update_time` from a small pool of "bulk edit" instants so that many records share the same
second (clients must cope with equal timestamps at page boundaries).

Records are plain dicts whose public keys are the API property names; timestamps are epoch seconds;
keys starting with `_` are internal (e.g. `_deleted_at`) and never rendered.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .clock import DAY, iso_date
from .fields import FieldDef, FieldRegistry

SCALES: dict[str, dict[str, int]] = {
    "tiny": dict(
        users=8,
        pipelines=2,
        organizations=50,
        persons=50,
        deals=50,
        products=50,
        activities=50,
        notes=50,
        leads=50,
        deal_products=50,
        deal_installments=50,
        projects=50,
        tasks=50,
        files=50,
        call_logs=50,
        boards=2,
    ),
    "small": dict(
        users=25,
        pipelines=3,
        organizations=2500,
        persons=10_000,
        deals=5000,
        products=300,
        activities=15_000,
        notes=5000,
        leads=1000,
        deal_products=7500,
        deal_installments=1500,
        projects=300,
        tasks=1500,
        files=1000,
        call_logs=1000,
        boards=3,
    ),
    "large": dict(
        users=120,
        pipelines=5,
        organizations=50_000,
        persons=200_000,
        deals=100_000,
        products=3000,
        activities=300_000,
        notes=100_000,
        leads=20_000,
        deal_products=150_000,
        deal_installments=30_000,
        projects=3000,
        tasks=15_000,
        files=20_000,
        call_logs=20_000,
        boards=4,
    ),
}
# between `small` and `large` (4 times `small`, a fifth of `large`): how a sync's peak memory grows on the
# way (`bench/memory.py --scales small medium large`)
SCALES["medium"] = {table: count * 4 for table, count in SCALES["small"].items()}
# twice `large`: whether a sync's peak memory still grows past `large` (`bench/memory.py --scales large
# xlarge`); the emulator itself then needs about 6 GB
SCALES["xlarge"] = {table: count * 2 for table, count in SCALES["large"].items()}
HISTORY_DAYS = 6 * 365
CURRENCIES = ["EUR", "USD", "GBP", "BRL", "JPY"]
FIRST = [
    "Ada",
    "Bruno",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farid",
    "Grace",
    "Hiro",
    "Inês",
    "Jonas",
    "Kaja",
    "Liam",
    "Maria",
    "Nils",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tanja",
    "Uma",
    "Victor",
    "Wen",
    "Zoë",
]
LAST = [
    "Tamm",
    "Silva",
    "Müller",
    "Smith",
    "Kask",
    "Rossi",
    "Novak",
    "García",
    "Kim",
    "Ivanova",
    "Dubois",
    "Jensen",
    "O'Brien",
    "Sato",
    "Nowak",
    "Costa",
]
WORDS = [
    "Alpha",
    "Nordic",
    "Blue",
    "Summit",
    "Vertex",
    "Pine",
    "Harbor",
    "Quantum",
    "Cedar",
    "Atlas",
    "Orbit",
    "Granite",
    "Lumen",
    "Delta",
    "Echo",
    "Solaris",
]
CITIES = [
    ("Tallinn", "Harju maakond", "Estonia", "10115"),
    ("Lisbon", "Lisboa", "Portugal", "1100-148"),
    ("Berlin", "Berlin", "Germany", "10117"),
    ("Austin", "Texas", "United States", "73301"),
    ("São Paulo", "São Paulo", "Brazil", "01000-000"),
    ("Tokyo", "Tokyo", "Japan", "100-0001"),
]


def table_rng(seed: int, name: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def det_uuid(seed: int, name: str, n: int) -> str:
    return str(uuid.UUID(bytes=hashlib.md5(f"{seed}/{name}/{n}".encode()).digest(), version=4))


@dataclass
class Timeline:
    """Spreads add/update times over the company's history with shared 'bulk edit' seconds."""

    now: int
    rng: random.Random
    bulk: list[int]

    @classmethod
    def make(cls, now: int, rng: random.Random, n: int) -> Timeline:
        origin = now - HISTORY_DAYS * DAY
        bulk = sorted(rng.randrange(origin, now - 60) for _ in range(max(4, n // 150)))
        return cls(now, rng, bulk)

    def add_time(self, i: int, n: int) -> int:
        origin = self.now - HISTORY_DAYS * DAY
        span = self.now - DAY - origin
        return origin + int(span * (i + self.rng.random()) / max(n, 1))

    def update_time(self, add: int) -> int:
        r = self.rng.random()
        if r < 0.12:
            j = bisect_left(self.bulk, add)
            if j < len(self.bulk):
                return self.bulk[j + int(self.rng.random() * (len(self.bulk) - j))]
        if r < 0.3:
            return add  # never edited since creation
        return add + int((self.now - 1 - add) * self.rng.random() ** 2)


def address(rng: random.Random, n: int) -> dict[str, Any]:
    city, area, country, postal = CITIES[n % len(CITIES)]
    number, route = str(1 + n % 199), f"{WORDS[n % len(WORDS)]} street"
    value = f"{route} {number}, {postal} {city}, {country}"
    return {
        "value": value,
        "street_number": number,
        "route": route,
        "subpremise": f"Apt {n % 40}" if n % 3 == 0 else "",
        "sublocality": f"{WORDS[(n + 3) % len(WORDS)]} district",
        "locality": city,
        "admin_area_level_1": area,
        "admin_area_level_2": f"{city} county",
        "country": country,
        "postal_code": postal,
        "formatted_address": value,
    }


# --- custom field values -------------------------------------------------------------------------------
def _value_pool(fd: FieldDef, rng: random.Random, refs: dict[str, int], now: int) -> list[Any]:
    t = fd.field_type
    opts = [o["id"] for o in fd.options or ()]
    pool: list[Any] = []
    for k in range(48):
        day = now - rng.randrange(0, 900) * DAY
        if t in ("varchar", "varchar_auto", "varchar_options", "phone"):
            v: Any = f"+372 5{rng.randrange(1000000, 9999999)}" if t == "phone" else f"{WORDS[k % 16]} {k}"
        elif t == "text":
            v = f"Long text {k}\nwith a second line and unicode ✓ {WORDS[k % 16]}"
        elif t == "int":
            v = rng.randrange(-50, 10_000)
        elif t == "double":
            v = round(rng.uniform(0, 10_000), 2)
        elif t == "boolean":
            v = bool(k % 2)
        elif t == "monetary":
            v = {"value": round(rng.uniform(10, 90_000), 2), "currency": CURRENCIES[k % len(CURRENCIES)]}
        elif t == "date":
            v = iso_date(day)
        elif t == "daterange":
            v = {"value": iso_date(day), "until": iso_date(day + rng.randrange(1, 60) * DAY)}
        elif t == "time":
            v = f"{rng.randrange(0, 24):02d}:{rng.choice((0, 15, 30, 45)):02d}:00"
        elif t == "timerange":
            h = rng.randrange(6, 18)
            v = {"value": f"{h:02d}:00:00", "until": f"{h + rng.randrange(1, 5):02d}:30:00"}
        elif t == "enum":
            v = rng.choice(opts)
        elif t == "set":
            v = sorted(rng.sample(opts, rng.randrange(1, min(3, len(opts)) + 1)))
        elif t == "address":
            v = address(rng, k)
        elif t in ("user", "org", "people"):
            v = rng.randrange(1, refs[t] + 1)
        else:
            raise ValueError(f"no generator for custom field type {t}")
        pool.append(v)
    return pool


class CustomValues:
    """Fills a record's `custom_fields` (v2 shapes) for one entity; about 60% of fields are set."""

    def __init__(self, fields: list[FieldDef], rng: random.Random, refs: dict[str, int], now: int):
        self.rng = rng
        self.pools = [(fd.code, _value_pool(fd, rng, refs, now)) for fd in fields]

    def make(self) -> dict[str, Any]:
        r = self.rng.random
        return {code: pool[int(r() * 48)] for code, pool in self.pools if r() < 0.6}

    def one(self, code: str) -> Any:
        for c, pool in self.pools:
            if c == code:
                return pool[int(self.rng.random() * 48)]
        raise KeyError(code)


# --- the generator -------------------------------------------------------------------------------------
class Generator:
    """Builds every table's records; `build()` returns {table name: [records]}."""

    def __init__(self, seed: int, scale: str, now: int, registry: FieldRegistry):
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; use one of {sorted(SCALES)}")
        self.seed, self.scale, self.now, self.reg = seed, scale, now, registry
        self.n = SCALES[scale]
        self.out: dict[str, list[dict]] = {}

    def rng(self, name: str) -> random.Random:
        return table_rng(self.seed, name)

    def refs(self) -> dict[str, int]:
        return {"user": self.n["users"], "org": self.n["organizations"], "people": self.n["persons"]}

    def custom(self, entity: str, rng: random.Random) -> CustomValues:
        # Deleted fields get values too: they linger in storage but are never rendered.
        fields = [f for f in self.reg.by_entity.get(entity, ()) if f.is_custom]
        return CustomValues(fields, rng, self.refs(), self.now)

    def build(self) -> dict[str, list[dict]]:
        from . import generate_more, generate_sales

        for step in (*generate_sales.STEPS, *generate_more.STEPS):
            step(self)
        return self.out

    def timed(self, name: str, n: int, make: Callable[[int, int, int, random.Random], dict]) -> list[dict]:
        """Build `n` records of `name`; `make(id, add_time, update_time, rng)` fills the rest."""
        rng = self.rng(name)
        tl = Timeline.make(self.now, rng, n)
        rows = []
        for i in range(n):
            add = tl.add_time(i, n)
            rows.append(make(i + 1, add, tl.update_time(add), rng))
        self.out[name] = rows
        return rows
