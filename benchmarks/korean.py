"""Korean place texts: how well the shipped model separates them, and what a multilingual model costs.

    python -m benchmarks.quality korean [--model-dir DIR] [--work DIR] [--texts 200] [--rounds 5]

Separation: the 60 places of benchmarks/korean_places.py (6 categories of 10) embedded by the
shipped int8 all-MiniLM-L6-v2 through the shard's Embedder: Korean catalogue texts, their English
translations, and each overview alone. Leave-one-out nearest-neighbour category accuracy and mean
cosine within and across categories, beside character-bigram counts (no model: what shared
letters alone give) and chance.

Cost: a BertModel of paraphrase-multilingual-MiniLM-L12-v2's shape (12 layers, 384 wide, 250,037
embedding rows) with random weights, over an XLM-R-style tokenizer of 250,002 pieces (trained
pieces plus unreachable filler: tests/tiny_models.py), exported by `python -m export_model
--source` (the same int8 path and parity gate). multilingual-e5-small has the same graph and a
512-token limit instead of 128: its row is the same files with the manifest's max_seq_length at
512. Each model runs in a fresh process per round, the models taking turns: peak resident memory
above the process's before the embedder loads, and texts/s one text at a time on 1 and 2 threads
(medians over the rounds). Random weights measure cost only, never quality.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import korean_places
from benchmarks.embedding import realistic_texts
from benchmarks.separation import Separation, chance, character_bigrams, separation
from witple_batch.embedder import Embedder
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, verify_model_dir
from witple_batch.resources import peak_rss_mb

REPO = Path(__file__).resolve().parents[1]
KINDS = ("catalogue", "korean")
THREADS = (1, 2)


def separation_rows(model_dir: Path) -> list[tuple[str, Separation]]:
    embedder = Embedder(model_dir, threads=2)
    labels = korean_places.labels()
    rows = []
    for language in ("korean", "english"):
        for part in ("catalogue", "overview"):
            texts = korean_places.texts(language, part)
            rows.append((f"shipped L6 int8, {language} {part}", separation(embedder.embed(texts), labels)))
            rows.append((f"character bigrams, {language} {part}", separation(character_bigrams(texts), labels)))
    return rows


def multilingual_model(work: Path) -> tuple[Path, dict[str, float]]:
    """The random L12 exported into work/model (built and exported once; the exporter skips what is up to date)."""
    from tests.tiny_models import MULTILINGUAL_MINILM_L12, run_export, write_source

    if not (work / "source" / "config.json").is_file():
        write_source(work / "source", MULTILINGUAL_MINILM_L12)
    result = run_export(work / "source", work / "model")
    if result.returncode != 0:
        raise SystemExit(f"export failed:\n{result.stderr}")
    manifest = json.loads((work / "model" / MANIFEST_FILE).read_text())
    figures = {"export_seconds": manifest["export_seconds"], **manifest["parity"]}
    if "model exported" in result.stderr:  # the export ran in this child: its peak is the children's
        figures["export_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return work / "model", figures


def with_max_seq_length(model_dir: Path, target: Path, max_seq_length: int) -> Path:
    """The same model.onnx and tokenizer, truncating at another length (the manifest is not hashed)."""
    shutil.copytree(model_dir, target, dirs_exist_ok=True)
    manifest = json.loads((target / MANIFEST_FILE).read_text())
    (target / MANIFEST_FILE).write_text(json.dumps({**manifest, "max_seq_length": max_seq_length}))
    verify_model_dir(target)
    return target


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure(model_dir: Path, texts: int) -> dict[str, object]:
    """One model in this process: memory the embedder adds at its peak, tokens, seconds per kind and threads."""
    sets = {"catalogue": realistic_texts("catalogue", texts), "korean": korean_places.texts("korean")}
    sets["korean"] *= max(1, texts // len(sets["korean"]))
    before = _rss_mb()
    embedder = Embedder(model_dir, threads=max(THREADS))
    embedder.embed(sets["korean"][:20])  # onnxruntime's first runs allocate
    rates, cpu_ms = {}, {}
    for kind, batch in sets.items():
        for threads in THREADS:
            embedder.threads = threads
            started, cpu_started = time.perf_counter(), time.process_time()
            embedder.embed(batch)
            rates[f"{kind}/{threads}"] = len(batch) / (time.perf_counter() - started)
            cpu_ms[f"{kind}/{threads}"] = (time.process_time() - cpu_started) * 1000 / len(batch)
    return {
        "peak_delta_mb": peak_rss_mb() - before,
        "tokens": {kind: statistics.median(len(e.ids) for e in embedder.tokenize(b)) for kind, b in sets.items()},
        "rates": rates,
        "cpu_ms": cpu_ms,  # the process's CPU time per text: what a busy machine disturbs least
    }


def rounds(models: dict[str, Path], texts: int, count: int) -> dict[str, list[dict]]:
    """Each model in a fresh process per round, one model later each round."""
    results: dict[str, list[dict]] = {name: [] for name in models}
    names = list(models)
    command = [sys.executable, "-m", "benchmarks.quality", "korean", "--texts", str(texts), "--measure"]
    for round_ in range(count):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            child = subprocess.run(
                [*command, str(models[name])],
                capture_output=True,
                text=True,
                check=True,
                cwd=REPO,
            )
            results[name].append(json.loads(child.stdout))
        print(f"round {round_ + 1}/{count} done", file=sys.stderr, flush=True)
    return results


def print_separation(rows: list[tuple[str, Separation]]) -> None:
    labels = korean_places.labels()
    print(f"\nSeparation: {len(labels)} places, {len(set(labels))} categories of 10, leave-one-out nearest neighbour")
    print(f"{'vectors, texts':<44}{'NN accuracy':>12}{'intra cos':>11}{'inter cos':>11}{'gap':>8}")
    for name, s in rows:
        print(f"{name:<44}{s.accuracy:>11.1%}{s.intra:>11.3f}{s.inter:>11.3f}{s.intra - s.inter:>8.3f}")
    print(f"chance: 1/6 = {1 / 6:.1%} (a neighbour at random among the other 59: {chance(labels):.1%})")


def print_cost(models: dict[str, Path], results: dict[str, list[dict]]) -> None:
    count = len(next(iter(results.values())))
    print(f"\nSize and memory (peak resident memory the embedder adds, median of {count} processes)")
    print(f"{'model':<44}{'model.onnx':>11}{'tokenizer':>10}{'max tokens':>11}{'tokens cat/ko':>14}{'peak +MiB':>10}")
    for name, folder in models.items():
        runs = results[name]
        tokens = "/".join(f"{statistics.median(r['tokens'][kind] for r in runs):.0f}" for kind in KINDS)
        print(
            f"{name:<44}{(folder / MODEL_FILE).stat().st_size / 1e6:>8.1f} MB"
            f"{(folder / TOKENIZER_FILE).stat().st_size / 1e6:>7.1f} MB"
            f"{verify_model_dir(folder).max_seq_length:>11}{tokens:>14}"
            f"{statistics.median(r['peak_delta_mb'] for r in runs):>10.0f}"
        )
    print(f"\nOne text at a time: texts/s, median [min-max] of {count} rounds, the models taking turns;")
    print("CPU ms per text on 1 thread (the process's CPU time, which other load on the machine disturbs least)")
    columns = [(kind, threads) for kind in KINDS for threads in THREADS]
    header = "".join(f"{f'{kind}, {threads} thread':>21}" for kind, threads in columns)
    print(f"{'model':<44}{header}" + "".join(f"{f'{kind} CPU ms':>15}" for kind in KINDS))
    for name in models:
        runs = results[name]
        cells = []
        for kind, threads in columns:
            rates = [r["rates"][f"{kind}/{threads}"] for r in runs]
            cells.append(f"{statistics.median(rates):>10.1f} [{min(rates):.0f}-{max(rates):.0f}]")
        cpu = "".join(f"{statistics.median(r['cpu_ms'][f'{kind}/1'] for r in runs):>15.1f}" for kind in KINDS)
        print(f"{name:<44}" + "".join(f"{cell:>21}" for cell in cells) + cpu)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    default_model = Path(os.environ.get("MODEL_DIR") or REPO / ".cache" / "model")
    parser.add_argument("--model-dir", type=Path, default=default_model, help="the shipped export (read only)")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "korean-bench", help="the random L12 goes here")
    parser.add_argument("--texts", type=int, default=200, help="catalogue texts per speed measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--separation-only", action="store_true", help="skip building and timing the L12")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> None:
    if args.measure:
        print(json.dumps(measure(args.measure, args.texts)))
        return
    print_separation(separation_rows(args.model_dir))
    if args.separation_only:
        return
    l12, export = multilingual_model(args.work)
    print(f"\nrandom L12 export: {json.dumps(export)}")
    models = {
        "shipped all-MiniLM-L6-v2": args.model_dir,
        "random L12 (paraphrase-multilingual, 128)": l12,
        "same graph at 512 (multilingual-e5-small)": with_max_seq_length(l12, args.work / "model-512", 512),
    }
    load = os.getloadavg()[0]
    results = rounds(models, args.texts, args.rounds)
    print_cost(models, results)
    print(f"load average (1 min): {load:.2f} before the rounds, {os.getloadavg()[0]:.2f} after; {os.cpu_count()} CPUs")
