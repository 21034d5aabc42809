"""What the exporter needs from a sentence-transformers folder, read and checked before any work.

One graph recipe fits BERT-shaped encoders: BERT itself, and XLM-R (position ids offset past its
padding id, no token_type_ids). The embedder mean-pools and normalises, and stores 384-d
vectors. A folder that needs anything else is refused in one line, before minutes of export,
rather than turned into vectors that mean something else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from witple_batch.errors import ConfigError
from witple_batch.model_files import EMBEDDING_DIM

MODEL_TYPES = ("bert", "xlm-roberta")
TRANSFORMER = "sentence_transformers.models.Transformer"
POOLING = "sentence_transformers.models.Pooling"
NORMALIZE = "sentence_transformers.models.Normalize"


@dataclass(frozen=True)
class SourceModel:
    path: Path
    model_type: str
    hidden_size: int
    num_heads: int
    layers: int
    max_seq_length: int
    text_prefix: str  # prepended to every text (e5's "query: "); baked into model.onnx by convert


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} cannot be read as JSON: {exc}") from None


def _json_object(path: Path) -> dict[str, Any]:
    data = _json(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object")
    return data


def _check_modules(path: Path, where: str) -> None:
    """Transformer at the folder's root, mean pooling, optionally Normalize: what the embedder reproduces."""
    if not (path / "modules.json").is_file():
        return  # a plain Hugging Face folder: sentence-transformers adds mean pooling itself
    modules = _json(path / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise ConfigError(f"{where}: modules.json does not hold a list of modules")
    types = [m.get("type") for m in modules]
    if types not in ([TRANSFORMER, POOLING], [TRANSFORMER, POOLING, NORMALIZE]) or modules[0].get("path"):
        raise ConfigError(f"{where}: modules {types} are not supported (Transformer at the root, Pooling, Normalize)")
    pooling = _json_object(path / str(modules[1].get("path", "")) / "config.json")
    modes = {key: value for key, value in pooling.items() if key.startswith("pooling_mode_")}
    if {key for key, value in modes.items() if value} != {"pooling_mode_mean_tokens"}:
        raise ConfigError(f"{where}: pooling {modes} is not supported (mean tokens only, as the embedder pools)")


def _max_seq_length(path: Path, config: dict[str, Any], where: str) -> int:
    """sentence-transformers' own limit (256 for all-MiniLM-L6-v2, not its tokenizer's 128 or BERT's 512).

    Without one, sentence-transformers takes the smaller of the positions and the tokenizer's limit;
    XLM-R's first positions belong to its padding id, so it has two fewer than it declares.
    """
    positions = int(config["max_position_embeddings"])
    if config["model_type"] == "xlm-roberta":
        positions -= int(config.get("pad_token_id", 1)) + 1
    st_config = path / "sentence_bert_config.json"
    settings = _json_object(st_config) if st_config.is_file() else {}
    if settings.get("do_lower_case"):
        raise ConfigError(f"{where}: do_lower_case is not supported (the embedder feeds the text as it is)")
    if settings.get("max_seq_length"):
        return min(int(settings["max_seq_length"]), positions)
    tokenizer_config = path / "tokenizer_config.json"
    if tokenizer_config.is_file():
        return min(int(_json_object(tokenizer_config).get("model_max_length", positions)), positions)
    return positions


def _text_prefix(path: Path, requested: str | None, where: str) -> str:
    """The prefix every text gets: asked for, or none; a folder that declares prompts must be told which."""
    st_config = path / "config_sentence_transformers.json"
    prompts = _json_object(st_config).get("prompts") if st_config.is_file() else None
    if requested is None and prompts:
        raise ConfigError(f"{where} declares prompts {prompts}: choose the one place texts get with --text-prefix")
    return requested or ""


def read_source(path: Path, text_prefix: str | None = None) -> SourceModel:
    where = f"--source {path}"
    if not (path / "config.json").is_file():
        raise ConfigError(f"{where} is not a Hugging Face model folder (no config.json)")
    config = _json_object(path / "config.json")
    model_type = config.get("model_type")
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not supported ({', '.join(MODEL_TYPES)})")
    try:
        hidden, heads, layers = (int(config[k]) for k in ("hidden_size", "num_attention_heads", "num_hidden_layers"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: config.json lacks a usable {exc}") from None
    if hidden != EMBEDDING_DIM:
        raise ConfigError(f"{where}: hidden size {hidden}, but this system stores {EMBEDDING_DIM}-dimensional vectors")
    if hidden % heads:
        raise ConfigError(f"{where}: hidden size {hidden} is not a multiple of {heads} attention heads")
    _check_modules(path, where)
    return SourceModel(
        path=path,
        model_type=model_type,
        hidden_size=hidden,
        num_heads=heads,
        layers=layers,
        max_seq_length=_max_seq_length(path, config, where),
        text_prefix=_text_prefix(path, text_prefix, where),
    )
