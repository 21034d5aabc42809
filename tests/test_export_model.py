from __future__ import annotations

import collections
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from export_model.cli import default_source
from export_model.parity import MIN_MEAN_COSINE, MIN_MIN_COSINE, Parity, ParityError, compare, measure
from export_model.parity_texts import parity_texts
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILE, MODEL_FILES, sha256_file
from witple_batch.s3 import s3_client


def test_parity_set_covers_what_the_gate_promises() -> None:
    texts = parity_texts()
    assert len(texts) >= 200
    assert "" in texts
    assert any("서울" in t for t in texts)
    assert any("🍜" in t for t in texts)
    assert any(t.startswith("restaurants ") and t.split()[-1].isdigit() for t in texts)
    assert any(len(t.split()) > 300 for t in texts)


def test_manifest_records_what_was_built(model_dir: Path) -> None:
    import onnxruntime

    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    assert manifest["dim"] == 384
    assert manifest["max_seq_length"] == 256
    assert manifest["onnx_sha256"] == sha256_file(model_dir / "model.onnx")
    assert manifest["onnxruntime_version"] == onnxruntime.__version__
    assert manifest["quantisation"]["weight_type"] == "QInt8"
    assert manifest["source"]["weights_sha256"]
    assert manifest["export_seconds"] > 0
    assert manifest["parity"]["mean_cosine"] >= MIN_MEAN_COSINE
    assert manifest["parity"]["min_cosine"] >= MIN_MIN_COSINE


@pytest.mark.parametrize(
    ("model", "inputs", "layer_norms"),
    [
        # BERT: the embeddings fuse into EmbedLayerNormalization, token_type_ids is an input (fed zeros)
        ("shipped", ["input_ids", "attention_mask", "token_type_ids"], 12),
        # XLM-R: no token_type_ids; its embeddings' layer norm stays a LayerNormalization of its own
        ("tiny_xlmr", ["input_ids", "attention_mask"], 13),
    ],
)
def test_the_exported_graph_is_the_recipe(request, model: str, inputs: list[str], layer_norms: int) -> None:
    import onnx

    folder = (
        request.getfixturevalue("model_dir") if model == "shipped" else request.getfixturevalue("tiny_export").model_dir
    )
    graph = onnx.load(str(folder / MODEL_FILE)).graph
    assert [i.name for i in graph.input] == inputs
    nodes = graph.node
    ops = collections.Counter(node.op_type for node in nodes)
    assert ops["SkipLayerNormalization"] == 0 and ops["LayerNormalization"] == layer_norms
    assert (ops["Attention"], ops["QAttention"]) == (1, 5)  # layer 0's attention alone in FP32

    def layer0(prefix: str) -> set[str]:
        return {node.op_type for node in nodes if node.name.startswith(f"/encoder/layer.0/{prefix}/")}

    # layer 0's three projections (and their bias adds) in FP32 too; every other layer's are int8
    for projection in ("attention/output/dense", "intermediate/dense", "output/dense"):
        assert layer0(projection) <= {"MatMul", "Add"} and "MatMul" in layer0(projection)
    assert "MatMulInteger" in {node.op_type for node in nodes if node.name.startswith("/encoder/layer.1/")}


def test_parity_gate_passes_against_the_fp32_reference(model_dir: Path) -> None:
    parity = measure(default_source(), model_dir, threads=2)
    parity.check()
    assert parity.texts >= 200
    assert parity.mean_cosine >= MIN_MEAN_COSINE
    assert parity.min_cosine >= MIN_MIN_COSINE


def test_parity_compares_row_by_row_and_refuses_mismatched_shapes() -> None:
    rows = np.eye(3, 384, dtype=np.float32)
    parity = compare(rows, rows[[0, 1, 0]])
    assert (parity.texts, parity.mean_cosine, parity.min_cosine) == (3, pytest.approx(2 / 3), 0.0)
    assert not parity.passes
    with pytest.raises(ValueError, match="shapes"):
        compare(rows, rows[:1])


def test_parity_gate_fails_loudly() -> None:
    with pytest.raises(ParityError, match=r"mean cosine 0\.9800"):
        Parity(texts=200, mean_cosine=0.98, min_cosine=0.975).check()
    with pytest.raises(ParityError, match=r"min cosine 0\.9000"):
        Parity(texts=200, mean_cosine=0.995, min_cosine=0.90).check()


def _export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "export_model", *args], capture_output=True, text=True, env=env, timeout=600
    )


def _copy_of(model_dir: Path, tmp_path: Path) -> Path:
    """The exports below write into their --output whenever the exporter's code differs from the one that
    built model_dir: never into the shared folder."""
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    return copy


def test_rerun_with_unchanged_inputs_skips_the_work(model_dir: Path, tmp_path: Path) -> None:
    copy = _copy_of(model_dir, tmp_path)
    before = (copy / "model.onnx").stat().st_mtime_ns
    result = _export("--output", str(copy))
    assert result.returncode == 0, result.stderr
    assert "model up to date" in result.stderr
    assert (copy / "model.onnx").stat().st_mtime_ns == before


def test_bad_source_is_a_configuration_error(tmp_path: Path) -> None:
    result = _export("--source", str(tmp_path), "--output", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "not a Hugging Face model folder" in result.stderr


def test_upload_copies_the_three_files(model_dir: Path, s3_env: dict[str, str], tmp_path: Path) -> None:
    import os

    model_dir = _copy_of(model_dir, tmp_path)
    client = s3_client(s3_env["AWS_REGION"])
    client.create_bucket(Bucket="models", CreateBucketConfiguration={"LocationConstraint": s3_env["AWS_REGION"]})
    result = _export("--output", str(model_dir), "--upload", "s3://models/minilm/v1/", env={**os.environ, **s3_env})
    assert result.returncode == 0, result.stderr
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="models")["Contents"]}
    assert keys == {f"minilm/v1/{name}" for name in MODEL_FILES}
    for name in MODEL_FILES:
        body = client.get_object(Bucket="models", Key=f"minilm/v1/{name}")["Body"].read()
        assert body == (model_dir / name).read_bytes(), name  # the bytes, not only the length
