from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from witple_batch.embedder import Embedder
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, ModelError


@pytest.fixture(scope="module")
def embedder(model_dir: Path) -> Embedder:
    return Embedder(model_dir, threads=2)


def test_rows_are_unit_float32_in_input_order(embedder: Embedder) -> None:
    texts = ["restaurants place 1", "a much longer text about a quiet beach cafe in Busan", "", "서울 카페"]
    vectors = embedder.embed(texts)
    assert vectors.shape == (4, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # a row belongs to its text, not to its position
    assert embedder.embed(texts[::-1])[::-1].tobytes() == vectors.tobytes()


def test_a_vector_depends_on_its_text_alone(embedder: Embedder) -> None:
    """Dynamic int8 scales are per tensor: batch mates must not change a text's vector."""
    alone = embedder.embed(["restaurants place 100017"])
    among = embedder.embed(["a long description of a beach " * 20, "restaurants place 100017", "x"])
    assert alone[0].tobytes() == among[1].tobytes()


def test_same_input_gives_identical_bytes(embedder: Embedder) -> None:
    texts = [f"nature place {i}" for i in range(70)]
    assert embedder.embed(texts).tobytes() == embedder.embed(texts).tobytes()


def test_no_input_gives_empty_matrix(embedder: Embedder) -> None:
    assert embedder.embed([]).shape == (0, 384)


def test_meaning_is_preserved(embedder: Embedder) -> None:
    a, b, c = embedder.embed(["a cheap hotel near the station", "budget hostel by the train station", "ski slope"])
    assert float(a @ b) > float(a @ c) + 0.2


def test_texts_past_max_length_are_truncated(embedder: Embedder) -> None:
    long = "word " * 2000
    assert embedder.manifest.max_seq_length == 256
    vectors = embedder.embed([long, "word " * 300])
    # both are cut at 256 tokens, so they embed the same token sequence
    assert float(vectors[0] @ vectors[1]) > 0.9999


def test_embedder_process_never_imports_torch_or_transformers(model_dir: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from witple_batch.embedder import Embedder\n"
        f"Embedder(Path({str(model_dir)!r}), threads=1).embed(['hello'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def _ops(graph_file: Path) -> collections.Counter[str]:
    import onnx

    return collections.Counter(node.op_type for node in onnx.load(str(graph_file)).graph.node)


def test_the_session_keeps_layer_norms_unfused(model_dir: Path, tmp_path: Path) -> None:
    """onnxruntime's CPU SkipLayerNormalization is the slow path (benchmarks/embedding.py recipes)."""
    options = ort.SessionOptions()  # a caller's own options: the embedder adds what it needs
    options.optimized_model_filepath = str(tmp_path / "ours.onnx")
    Embedder(model_dir, threads=1, options=options)
    ours = _ops(tmp_path / "ours.onnx")
    assert ours["SkipLayerNormalization"] == 0
    assert ours["LayerNormalization"] == 12  # two per encoder layer
    # a session with onnxruntime's defaults fuses them back: the option is what keeps them apart
    defaults = ort.SessionOptions()
    defaults.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    defaults.optimized_model_filepath = str(tmp_path / "defaults.onnx")
    ort.InferenceSession(str(model_dir / MODEL_FILE), defaults, providers=["CPUExecutionProvider"])
    assert _ops(tmp_path / "defaults.onnx")["SkipLayerNormalization"] == 12


def _copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


def test_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        Embedder(tmp_path / "nowhere")


def test_truncated_model_is_reported_as_corrupt(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy(model_dir, tmp_path)
    data = (copy / MODEL_FILE).read_bytes()
    (copy / MODEL_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match=r"model\.onnx is corrupt"):
        Embedder(copy)


def test_wrong_dim_in_manifest_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy(model_dir, tmp_path)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    manifest["dim"] = 768
    (copy / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="dim is 768"):
        Embedder(copy)


def test_missing_tokenizer_and_bad_manifest_are_named(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy(model_dir, tmp_path)
    (copy / TOKENIZER_FILE).unlink()
    with pytest.raises(ModelError, match=r"tokenizer\.json is missing"):
        Embedder(copy)
    (copy / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        Embedder(copy)


def test_threads_default_to_the_cpu_quota(model_dir: Path) -> None:
    from witple_batch.resources import available_cpus

    assert Embedder(model_dir).threads == available_cpus()


def test_peak_rss_is_this_process_not_the_parent_that_started_it():
    import subprocess
    import sys

    from witple_batch.resources import peak_rss_mb

    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"\x01" * len(range(0, len(ballast), 4096))  # touch every page: resident
    assert peak_rss_mb() > 400
    child = subprocess.run(
        [sys.executable, "-c", "from witple_batch.resources import peak_rss_mb; print(peak_rss_mb())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 1 < float(child.stdout) < 100  # ru_maxrss would say > 400: Linux keeps it across exec
