"""int8 ONNX embedder vs sentence-transformers FP32 on PyTorch: same texts, same threads, one run.

    .venv/bin/python benchmarks/embed_bench.py [--kind catalogue|short] [--texts N] [--threads 2] [--repeats 3]

A third contender is what the embedder does not do: the same int8 model on length-sorted
batches of 32 (padded, attention-masked), `--threads` batches at a time. Printed beside its
speed: how far its vectors are from the same texts embedded alone (dynamic int8 takes one
activation scale per tensor, so a text's vector depends on its batch mates).

`catalogue` texts are what a shard embeds for a place the catalogue knows, composed by the
real place_text: name, category, region and city, then an English or Korean overview of 40 to
200 words (50 to 256 tokens). `sample` texts are the local sample catalogue's (one-sentence
overviews, ~40 tokens: what e2e_bench's shards embed on day 1). `short` texts are a place's
name, or its category alone (the fallback when the catalogue does not know the place).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from witple_batch.embedder import Embedder
from witple_batch.model_files import EMBEDDING_DIM
from witple_batch.place_text import CatalogueEntry, place_text

REPO = Path(__file__).resolve().parents[1]
CONTENDERS = ("reference", "ours", "batched")
CATEGORIES = ("restaurants", "accommodation", "nature", "humanities", "shopping", "leisure_sports")
WORDS = (
    "quiet cafe harbour view grilled pork belly open late family beach shallow water palace garden boutique "
    "hotel subway rooftop trail summit night market street food crafts museum painters hostel kitchen tea "
    "house hanok cycling river outlet mall temple meditation ski resort seafood spicy stew waterfall bookstore"
).split()
KOREAN = "서울 부산 제주 카페 맛집 해변 시장 박물관 한옥 등산로 전망대 야경 숙소 펜션 공원 온천 축제 거리".split()


def realistic_texts(kind: str, n: int, seed: int = 7) -> list[str]:
    if kind == "sample":  # what e2e_bench's shards embed on day 1
        from local_stack.sample_data import catalogue

        return [
            place_text(row.table_name, CatalogueEntry(row.name, row.overview, row.region, row.city, row.category))
            for row in catalogue(n)
        ]
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        category = rng.choice(CATEGORIES)
        if kind == "short":
            short = rng.random() < 0.5
            texts.append(
                place_text(category, None if short else CatalogueEntry(name=" ".join(rng.choices(WORDS, k=3))))
            )
            continue
        vocabulary = KOREAN + WORDS if rng.random() < 0.5 else WORDS
        entry = CatalogueEntry(
            name=" ".join(rng.choices(vocabulary, k=rng.randint(2, 5))),
            region=rng.choice(KOREAN[:3]),
            city=rng.choice(KOREAN[:3]),
            overview=" ".join(rng.choices(vocabulary, k=rng.randint(40, 200))),
        )
        texts.append(place_text(category, entry))
    return texts


def time_it(fn: object, repeats: int) -> tuple[float, np.ndarray]:
    timings, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()  # type: ignore[operator]
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result  # type: ignore[return-value]


def embed_in_batches(embedder: Embedder, texts: list[str], threads: int, size: int = 32) -> np.ndarray:
    """Length-sorted padded batches through the embedder's own session, mean-pooled under the mask."""
    encodings = embedder.tokenize(texts)
    order = sorted(range(len(texts)), key=lambda row: -len(encodings[row].ids))
    out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)

    def run(rows: list[int]) -> None:
        width = len(encodings[rows[0]].ids)
        ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(encodings[row].ids)] = encodings[row].ids
            mask[i, : len(encodings[row].ids)] = 1
        states = embedder._run(ids, mask)  # the shard's session and feed
        sums = (states * mask[:, :, None]).sum(axis=1) / mask.sum(axis=1, keepdims=True)
        out[rows] = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(run, [order[k : k + size] for k in range(0, len(order), size)]))
    return out


def run_contender(args: argparse.Namespace) -> None:
    """One contender in its own process, so neither thread pool disturbs the other."""
    texts = realistic_texts(args.kind, args.texts)
    if args.only == "reference":
        import torch
        from sentence_transformers import SentenceTransformer

        from export_model.cli import default_source

        torch.set_num_threads(args.threads)
        model = SentenceTransformer(str(default_source()), device="cpu", local_files_only=True)
        seconds, vectors = time_it(
            lambda: model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False),
            args.repeats,
        )
    else:  # ours, or the same embedder's session fed batches
        embedder = Embedder(args.model_dir, threads=args.threads)
        batched = args.only == "batched"
        seconds, vectors = time_it(
            lambda: embed_in_batches(embedder, texts, args.threads) if batched else embedder.embed(texts),
            args.repeats,
        )
    np.save(args.out / f"{args.only}.npy", vectors)
    (args.out / f"{args.only}.seconds").write_text(str(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=("catalogue", "sample", "short"), default="catalogue")
    parser.add_argument("--texts", type=int, default=1500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("MODEL_DIR", REPO / ".cache/model")))
    parser.add_argument("--only", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only:
        run_contender(args)
        return

    with tempfile.TemporaryDirectory() as tmp:
        seconds, vectors = {}, {}
        for contender in CONTENDERS:
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--only",
                    contender,
                    "--out",
                    tmp,
                    "--texts",
                    str(args.texts),
                    "--kind",
                    args.kind,
                    "--threads",
                    str(args.threads),
                    "--repeats",
                    str(args.repeats),
                    "--model-dir",
                    str(args.model_dir),
                ],
                check=True,
                env={**os.environ, "HF_HUB_OFFLINE": "1"},
            )
            seconds[contender] = float(Path(tmp, f"{contender}.seconds").read_text())
            vectors[contender] = np.load(Path(tmp, f"{contender}.npy"))
    cosines = (vectors["reference"] * vectors["ours"]).sum(axis=1)
    n = args.texts
    texts = realistic_texts(args.kind, n)
    words = statistics.median(len(t.split()) for t in texts)
    tokens = statistics.median(len(e.ids) for e in Embedder(args.model_dir).tokenize(texts))
    print(
        f"{args.kind} texts: {n} ({words:.0f} words, {tokens:.0f} tokens median)  threads: {args.threads}  "
        f"repeats: {args.repeats} (median), each contender in its own process"
    )
    print(f"{'embedder':<52}{'seconds':>10}{'texts/s':>10}")
    for name, label in (
        ("reference", "sentence-transformers FP32 (PyTorch, bs 32)"),
        ("ours", "witple int8 ONNX (onnxruntime, one text at a time)"),
        ("batched", "the same int8 model in length-sorted batches of 32"),
    ):
        print(f"{label:<52}{seconds[name]:>10.2f}{n / seconds[name]:>10.0f}")
    print(
        f"speed-up: {seconds['reference'] / seconds['ours']:.2f}x   "
        f"parity: mean cosine {cosines.mean():.4f}, min {cosines.min():.4f}"
    )
    apart = (vectors["batched"] * vectors["ours"]).sum(axis=1)
    print(
        f"batches against one text at a time: {seconds['ours'] / seconds['batched']:.2f}x the speed; "
        f"the same text batched and alone: largest coordinate difference "
        f"{np.abs(vectors['batched'] - vectors['ours']).max():.4f}, lowest cosine {apart.min():.4f}"
    )


if __name__ == "__main__":
    main()
