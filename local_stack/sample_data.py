"""Sample action files in the collection server's exact format, with the totals they must produce,
and a place catalogue in the main server's shape.

Used by the local runner, the tests and the benchmarks: one generator, so every check
compares against the same expectations. Places belong to themes (beach, mountain, food,
history, art); each user leans to one theme, so behaviour vectors have something to find.
"""

from __future__ import annotations

import gzip
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson

CATEGORIES = ("restaurants", "accommodation", "nature", "humanities", "shopping", "leisure_sports")
THEMES = {
    "beach": (
        ("Sunset", "Blue", "Pebble", "Coral", "Harbour"),
        ("Beach", "Bay", "Pier", "Island Cove", "Surf Point"),
        "sand, waves, surfing lessons, seafood shacks and sunsets over the sea",
    ),
    "mountain": (
        ("Misty", "Pine", "Granite", "High", "Maple"),
        ("Peak Trail", "Valley Lodge", "Ridge", "Summit Hut", "Forest Path"),
        "hiking trails, autumn leaves, mountain streams and a cable car to the summit",
    ),
    "food": (
        ("Grandma's", "Smoky", "Spicy", "Golden", "Night Market"),
        ("Noodle House", "Barbecue", "Stew Kitchen", "Dumpling Bar", "Street Food Alley"),
        "grilled meat, spicy stews, hand-pulled noodles and late-night street food",
    ),
    "history": (
        ("Royal", "Old", "Ancient", "Dynasty", "Heritage"),
        ("Palace", "Fortress", "Temple", "Hanok Village", "Tomb Park"),
        "palace gates, old temples, royal tombs and guided history tours",
    ),
    "art": (
        ("Modern", "Open", "Gallery", "Studio", "Indie"),
        ("Art Museum", "Design Plaza", "Craft Workshop", "Gallery Street", "Mural Alley"),
        "contemporary art, design exhibitions, craft workshops and street murals",
    ),
}
THEME_NAMES = tuple(THEMES)
CITIES = (
    ("Busan", "Haeundae"),
    ("Jeju", "Seogwipo"),
    ("Seoul", "Jongno"),
    ("Gangwon", "Sokcho"),
    ("Gyeongju", "Hwango"),
)
TYPES = ("click", "like", "bookmark", "share")
TYPE_P = (0.72, 0.18, 0.08, 0.02)
WEIGHTS = {"click": 1.0, "like": 3.0, "bookmark": 5.0}


@dataclass
class SampleFile:
    key: str
    body: bytes
    content_encoding: str | None = None


@dataclass
class Expected:
    """What the database must hold after these files, from the generator's own bookkeeping."""

    actions: int = 0
    rejected_records: int = 0
    rejected_files: int = 0
    users: dict[str, dict[str, float]] = field(default_factory=dict)
    places: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, action: dict[str, Any]) -> None:
        kind = action["action_type"]
        counted = kind if kind in WEIGHTS else "other"
        user = self.users.setdefault(
            str(action["user_id"]), {"click": 0, "like": 0, "bookmark": 0, "other": 0, "weight": 0.0}
        )
        user[counted] += 1
        user["weight"] += WEIGHTS.get(kind, 0.0)
        place = self.places.setdefault(
            (action["place_category"], str(action["place_id"])),
            {"click": 0, "like": 0, "bookmark": 0, "other": 0, "users": set()},
        )
        place[counted] += 1
        place["users"].add(str(action["user_id"]))
        self.actions += 1

    def merge(self, other: Expected) -> Expected:
        merged = Expected()
        for source in (self, other):
            merged.actions += source.actions
            merged.rejected_records += source.rejected_records
            merged.rejected_files += source.rejected_files
            for uid, stats in source.users.items():
                target = merged.users.setdefault(uid, {k: 0 for k in stats})
                for k, v in stats.items():
                    target[k] += v
            for key, stats in source.places.items():
                target = merged.places.setdefault(
                    key, {"click": 0, "like": 0, "bookmark": 0, "other": 0, "users": set()}
                )
                for k in ("click", "like", "bookmark", "other"):
                    target[k] += stats[k]
                target["users"] |= stats["users"]
        return merged


@dataclass
class SampleSet:
    files: list[SampleFile]
    expected: Expected


@dataclass(frozen=True)
class CatalogueRow:
    """One row of the main server's place_recommendations table."""

    place_id: int
    table_name: str
    name: str
    overview: str
    region: str
    city: str
    category: str
    theme: str


def theme_of_place(place: int) -> int:
    return (place * 7 + 3) % len(THEMES)


def place_key(place: int) -> tuple[str, int]:
    """(category, id) of sample place `place`: what its actions carry and its catalogue row says."""
    return CATEGORIES[place % len(CATEGORIES)], 100_000 + place


def catalogue(places: int) -> list[CatalogueRow]:
    """The same rows for the same place count, whatever the actions' seed (day 2 sees day 1's places)."""
    rows = []
    for place in range(places):
        rng = np.random.default_rng(place)
        theme = THEME_NAMES[theme_of_place(place)]
        adjectives, nouns, description = THEMES[theme]
        region, city = CITIES[int(rng.integers(len(CITIES)))]
        category, place_id = place_key(place)
        name = f"{adjectives[int(rng.integers(5))]} {nouns[int(rng.integers(5))]}"
        overview = f"{name} in {city}, {region}: {description}."
        rows.append(CatalogueRow(place_id, category, name, overview, region, city, category.replace("_", " "), theme))
    return rows


CATALOGUE_DDL = """
CREATE TABLE IF NOT EXISTS place_recommendations (
    id serial PRIMARY KEY, place_id integer NOT NULL, table_name varchar NOT NULL, name varchar, overview text,
    region varchar, city varchar, category varchar, latitude double precision, longitude double precision,
    image_urls json, bookmark_cnt integer DEFAULT 0
)
"""


def install_catalogue(database_url: str, rows: list[CatalogueRow]) -> int:
    """The sample catalogue as the main server's table, into an empty or missing table; returns rows written."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(CATALOGUE_DDL)
        if conn.execute("SELECT EXISTS (SELECT 1 FROM place_recommendations)").fetchone()[0]:  # type: ignore[index]
            return 0
        with conn.cursor().copy(
            "COPY place_recommendations (place_id, table_name, name, overview, region, city, category) FROM STDIN"
        ) as copy:
            for r in rows:
                copy.write_row((r.place_id, r.table_name, r.name, r.overview, r.region, r.city, r.category))
    return len(rows)


def _zipf_indices(rng: np.random.Generator, n: int, size: int, a: float) -> np.ndarray:
    ranks = np.arange(1, n + 1, dtype=np.float64)
    p = ranks**-a
    return rng.choice(n, size=size, p=p / p.sum())


def _key(prefix: str, moment: datetime, count: int, rng: np.random.Generator) -> str:
    ms = int(moment.timestamp() * 1000)
    tag = uuid.UUID(int=int(rng.integers(0, 2**63)) << 64 | int(rng.integers(0, 2**63))).hex[:8]
    return f"{prefix}year={moment:%Y}/month={moment:%m}/day={moment:%d}/hour={moment:%H}/batch-{ms}-{count}-{tag}.json"


def _action(rng: np.random.Generator, user: int, place: int, kind: str, moment: datetime) -> dict[str, Any]:
    ms = int(moment.timestamp() * 1000)
    category, place_id = place_key(place)
    return {
        "user_id": f"user-{user:06d}",
        "place_category": category,
        "place_id": str(place_id) if place % 7 else place_id,  # ids arrive as numbers too
        "action_type": kind,
        "action_value": int(rng.integers(1, 6)) if kind == "like" else None,
        "action_detail": None,
        "session_id": f"sess-{user:06d}-{ms // 3_600_000}",
        "timestamp": moment.isoformat().replace("+00:00", "Z"),
        "server_timestamp": (moment + timedelta(milliseconds=150)).isoformat(),
        "server_received_at": ms + 150,
        "request_id": str(uuid.UUID(int=int(rng.integers(0, 2**63)))),
        "client_ip": "203.0.113.7",
        "user_agent": "Witple/3.2 (iOS 18.1)",
        "client_url": "https://witple.app/place",
        "component": "place_card",
    }


def _envelope(actions: list[dict[str, Any]], moment: datetime) -> dict[str, Any]:
    return {
        "batch_id": str(uuid.uuid4()),
        "timestamp": moment.isoformat(),
        "count": len(actions),
        "server_info": {"host": "collector-1", "version": "1.4.0"},
        "actions": actions,
    }


def generate(
    *,
    actions: int = 100_000,
    users: int = 20_000,
    places: int = 5_000,
    seed: int = 42,
    prefix: str = "user-actions/",
    start: datetime | None = None,
    batch_size: int = 100,
    malformed_files: int = 3,
    bad_record_rate: float = 0.002,
    single_rate: float = 0.02,
) -> SampleSet:
    """About `actions` actions over users/places with Zipf-like popularity, in batch files.

    Three actions in four go to a place of the user's theme (user u leans to theme u mod 5).
    """
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 1, 15, 14, tzinfo=UTC)
    user_of = _zipf_indices(rng, users, actions, 0.9)
    place_of = _zipf_indices(rng, places, actions, 1.1)
    by_theme = [np.flatnonzero([theme_of_place(p) == t for p in range(places)]) for t in range(len(THEMES))]
    leaning = rng.random(actions) < 0.75
    for theme, members in enumerate(by_theme):
        pick = leaning & (user_of % len(THEMES) == theme)
        if len(members) and pick.any():
            place_of[pick] = members[_zipf_indices(rng, len(members), int(pick.sum()), 1.1)]
    kinds = rng.choice(len(TYPES), size=actions, p=TYPE_P)
    offsets = np.sort(rng.integers(0, 6 * 3_600_000, size=actions))
    expected = Expected()
    files: list[SampleFile] = []
    batch: list[dict[str, Any]] = []

    def flush(moment: datetime) -> None:
        if batch:
            body = gzip.compress(orjson.dumps(_envelope(batch, moment)), mtime=0)
            files.append(SampleFile(_key(prefix, moment, len(batch), rng), body, "gzip"))
            batch.clear()

    for i in range(actions):
        moment = start + timedelta(milliseconds=int(offsets[i]))
        record = _action(rng, int(user_of[i]), int(place_of[i]), TYPES[kinds[i]], moment)
        roll = rng.random()
        if roll < bad_record_rate:
            record = (
                {**record, "user_id": ["not", "an", "id"]}
                if roll < bad_record_rate / 2
                else {k: v for k, v in record.items() if k != "place_id"}
            )
            expected.rejected_records += 1
        else:
            expected.add(record)
        if record["action_type"] in ("like", "bookmark") and roll > 1 - single_rate:
            # "immediate" uploads: one action, plain JSON, no ContentEncoding
            body = orjson.dumps(_envelope([record], moment) if i % 2 else record)
            files.append(SampleFile(_key(prefix, moment, 1, rng), body))
            continue
        batch.append(record)
        if len(batch) >= batch_size:
            flush(moment)
    flush(start + timedelta(hours=6))
    for j in range(malformed_files):
        moment = start + timedelta(minutes=7 * j + 3)
        body = [b"{not json at all", gzip.compress(b'{"actions": [')[:-6], b""][j % 3]
        files.append(SampleFile(_key(prefix, moment, 0, rng), body, "gzip" if j % 3 == 1 else None))
        expected.rejected_files += 1
    return SampleSet(files=files, expected=expected)


def upload(client: Any, bucket: str, files: list[SampleFile], concurrency: int = 16) -> None:
    def put(item: SampleFile) -> None:
        extra = {"ContentEncoding": item.content_encoding} if item.content_encoding else {}
        client.put_object(Bucket=bucket, Key=item.key, Body=item.body, ContentType="application/json", **extra)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        list(pool.map(put, files))


def ensure_bucket(client: Any, bucket: str, region: str) -> None:
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
