"""PyTorch weights -> ONNX (optimum) -> fused CPU graph -> dynamic int8 (onnxruntime).

Per-channel QInt8 weights (per-tensor lost too much accuracy), uint8 activations quantised per
text at run time (each text is embedded alone: witple_batch.embedder). Encoder layer 0 stays in
FP32: quantised, it failed the parity gate on short Korean texts on a CPU without VNNI, and the
gate runs only where the model is exported, not on the Batch host that embeds. Residual adds and
layer norms stay unfused: onnxruntime's CPU SkipLayerNormalization is the slower kernel, and the
embedder keeps its session from fusing them back. `python -m benchmarks.embedding recipes`
measures the recipes against each other.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from export_model.source import SourceModel
from witple_batch.model_files import MODEL_FILE, TEXT_PREFIX_KEY, TOKENIZER_FILE


@dataclass(frozen=True)
class Recipe:
    """The graph choices an export makes: the default ships; `benchmarks.embedding recipes` measures others."""

    fuse_skip_layer_norm: bool = False
    fp32_layer0: tuple[str, ...] = ("attention", "attention_output", "feed_forward_in", "feed_forward_out")


def describe(recipe: Recipe) -> dict[str, object]:
    """What the manifest records about a recipe's quantisation."""
    return {
        "method": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QInt8",
        "per_channel": True,
        "reduce_range": False,
        "activations": "uint8, dynamic per-tensor",
        "graph": "onnxruntime.transformers.optimizer bert fusion, opt_level 1"
        + ("" if recipe.fuse_skip_layer_norm else ", residual adds and layer norms unfused"),
        "fp32_nodes": "encoder layer 0: " + (", ".join(recipe.fp32_layer0) or "none"),
    }


RECIPE = Recipe()
QUANTISATION = describe(RECIPE)


def _fused_graph(plain: Path, fused: Path, recipe: Recipe, source: SourceModel) -> None:
    """onnxruntime's BERT fusions, for XLM-R too: its encoder layers are BERT's."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    options.enable_skip_layer_norm = options.enable_bias_skip_layer_norm = recipe.fuse_skip_layer_norm
    model = optimizer.optimize_model(
        str(plain),
        model_type="bert",
        num_heads=source.num_heads,
        hidden_size=source.hidden_size,
        opt_level=1,
        use_gpu=False,
        optimization_options=options,
    )
    model.save_model_to_file(str(fused))


def _layer0_nodes(fused: Path) -> dict[str, str]:
    """Encoder layer 0's parts by name: its MatMuls, and the Attention fed by the embedding layer norm.

    BERT's embeddings fuse into EmbedLayerNormalization; XLM-R's do not (onnxruntime does not fuse
    its offset position ids), so there the layer norm is the embeddings' own LayerNormalization.
    """
    import onnx

    graph = onnx.load(str(fused), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    prefixes = {
        "attention_output": "/encoder/layer.0/attention/output/dense/",
        "feed_forward_in": "/encoder/layer.0/intermediate/dense/",
        "feed_forward_out": "/encoder/layer.0/output/dense/",
    }
    found = {
        part: [n.name for n in graph.node if n.op_type == "MatMul" and n.name.startswith(prefix)]
        for part, prefix in prefixes.items()
    }
    found["attention"] = [
        n.name
        for n in graph.node
        if n.op_type == "Attention"
        and n.input[0] in producer
        and (
            producer[n.input[0]].op_type == "EmbedLayerNormalization"
            or producer[n.input[0]].name.startswith("/embeddings/LayerNorm/")
        )
    ]
    if any(len(names) != 1 for names in found.values()):
        # a renamed or differently fused graph would silently quantise what parity needs in FP32
        raise RuntimeError(f"cannot find encoder layer 0 in the fused graph: {found}")
    return {part: names[0] for part, names in found.items()}


def _quantise(fused: Path, target: Path, recipe: Recipe) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    layer0 = _layer0_nodes(fused)
    quantize_dynamic(
        str(fused),
        str(target),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=[layer0[part] for part in recipe.fp32_layer0],
        # the fused Attention node has no type inference; tell the quantiser it is float
        extra_options={"DefaultTensorType": TensorProto.FLOAT},
    )


def _tokenizer(plain_dir: Path, target: Path, max_len: int) -> None:
    """optimum writes a fixed padding of 128; each batch must pad to its own longest text."""
    data: dict[str, Any] = json.loads((plain_dir / TOKENIZER_FILE).read_text())
    data["padding"] = None
    data["truncation"] = {
        "direction": "Right",
        "max_length": max_len,
        "strategy": "LongestFirst",
        "stride": 0,
    }
    target.write_text(json.dumps(data, ensure_ascii=False))


def add_text_prefix(model: Path, prefix: str) -> None:
    """The prefix goes into model.onnx's metadata, so its sha256 (the vector space's name) covers it."""
    import onnx

    graph = onnx.load(str(model))
    onnx.helper.set_model_props(graph, {**{p.key: p.value for p in graph.metadata_props}, TEXT_PREFIX_KEY: prefix})
    onnx.save(graph, str(model))


def convert(source: SourceModel, out_dir: Path, recipe: Recipe = RECIPE) -> None:
    """Write model.onnx and tokenizer.json into out_dir."""
    from optimum.exporters.onnx import main_export

    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        work = Path(tmp)
        # library_name="transformers": the graph returns token states; pooling lives in the embedder.
        main_export(
            str(source.path),
            output=str(work / "plain"),
            task="feature-extraction",
            device="cpu",
            library_name="transformers",
            do_validation=False,
            local_files_only=True,
        )
        _fused_graph(work / "plain" / MODEL_FILE, work / "fused.onnx", recipe, source)
        _quantise(work / "fused.onnx", out_dir / MODEL_FILE, recipe)
        if source.text_prefix:  # without one, model.onnx stays byte for byte what it was
            add_text_prefix(out_dir / MODEL_FILE, source.text_prefix)
        _tokenizer(work / "plain", out_dir / TOKENIZER_FILE, source.max_seq_length)
