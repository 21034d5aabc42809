"""PyTorch weights -> ONNX (optimum) -> fused CPU graph -> dynamic int8 (onnxruntime).

Measured on a 2-core AVX2 machine without VNNI (not re-measured with VNNI), 3,000 mixed texts, 2 threads:
per-channel QInt8 weights keep mean cosine ~0.991 while per-tensor QInt8 falls to ~0.954;
QUInt8 weights are ~12% slower on AVX2; reduce_range costs accuracy for nothing here.
The fused graph (Attention, SkipLayerNorm, BiasGelu) is as fast as the plain one once
quantised but has a tenth of the nodes, so it loads faster and reads clearer.

Each text runs alone at embedding time (see witple_batch.embedder), so activation scales
come from one text. Quantising every layer then fails the parity gate on short, [UNK]-heavy
Korean texts (mean 0.9888, min 0.950). Measured one layer at a time, only the first
encoder layer matters: keeping layer 0 (QKV attention and three MatMuls) in FP32 gives
mean 0.9932, min 0.9809, for ~12% of the int8 speed; any other single layer leaves
min <= 0.958, and FP32 feed-forward outputs in all layers reach min 0.961 at -25%.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILE, TOKENIZER_FILE

QUANTISATION = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "activations": "uint8, dynamic per-tensor",
    "graph": "onnxruntime.transformers.optimizer bert fusion, opt_level 1",
    "fp32_nodes": "encoder layer 0 (Attention and its three MatMuls)",
}


def source_max_seq_length(source: Path) -> int:
    """sentence-transformers' own limit (256 for MiniLM), not the tokenizer's 128 or BERT's 512."""
    config = source / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["max_seq_length"])
    return int(json.loads((source / "config.json").read_text())["max_position_embeddings"])


def _fused_graph(plain: Path, fused: Path) -> None:
    from onnxruntime.transformers import optimizer

    model = optimizer.optimize_model(
        str(plain), model_type="bert", num_heads=12, hidden_size=EMBEDDING_DIM, opt_level=1, use_gpu=False
    )
    model.save_model_to_file(str(fused))


def _fp32_nodes(fused: Path) -> list[str]:
    """Encoder layer 0: its MatMuls by name, and the Attention fed by the embedding layer norm."""
    import onnx

    graph = onnx.load(str(fused), load_external_data=False).graph
    producer = {output: node for node in graph.node for output in node.output}
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul" and n.name.startswith("/encoder/layer.0/")]
    attention = [
        n.name
        for n in graph.node
        if n.op_type == "Attention"
        and producer.get(n.input[0]) is not None
        and producer[n.input[0]].op_type == "EmbedLayerNormalization"
    ]
    if len(matmuls) != 3 or len(attention) != 1:
        # a renamed or differently fused graph would silently quantise what parity needs in FP32
        raise RuntimeError(f"cannot find encoder layer 0 in the fused graph (MatMuls {matmuls}, Attention {attention})")
    return matmuls + attention


def _quantise(fused: Path, target: Path) -> None:
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fused),
        str(target),
        per_channel=True,
        reduce_range=False,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=_fp32_nodes(fused),
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


def convert(source: Path, out_dir: Path) -> int:
    """Write model.onnx and tokenizer.json into out_dir; return the max sequence length."""
    from optimum.exporters.onnx import main_export

    max_len = source_max_seq_length(source)
    with tempfile.TemporaryDirectory(prefix="export-") as tmp:
        work = Path(tmp)
        # library_name="transformers": the graph returns token states; pooling lives in the embedder.
        main_export(
            str(source),
            output=str(work / "plain"),
            task="feature-extraction",
            device="cpu",
            library_name="transformers",
            do_validation=False,
            local_files_only=True,
        )
        _fused_graph(work / "plain" / MODEL_FILE, work / "fused.onnx")
        _quantise(work / "fused.onnx", out_dir / MODEL_FILE)
        _tokenizer(work / "plain", out_dir / TOKENIZER_FILE, max_len)
    return max_len
