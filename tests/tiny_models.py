"""Random-weight sentence-transformers folders shaped like the multilingual models, built offline.

No multilingual weights exist here, so these stand in for them: an XLM-R-style Unigram tokenizer
trained locally on Korean and English text, a randomly initialised encoder of the chosen shape,
and the files a downloaded sentence-transformers folder holds. They test the export's plumbing
and measure a model's cost; they say nothing about quality.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO = Path(__file__).resolve().parents[1]
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # XLM-R's ids 0-3; <mask> is its last id
TRAINED_PIECES = 2000  # at most: the corpus yields ~1,700
FILLER_SCORE = -30.0  # far below any trained piece: the filler pieces never win a segmentation


@dataclass(frozen=True)
class Shape:
    """What a random model copies from a real one: architecture, sizes, and its sentence-transformers limit."""

    model_type: str  # "xlm-roberta" (no token_type_ids in the graph) or "bert" (a graph input, fed zeros)
    layers: int
    tokenizer_pieces: int | None  # None: whatever the training corpus yields; else padded with filler pieces
    embedding_rows: int | None  # the model's vocab_size, None: the tokenizer's size
    max_seq_length: int
    # the real configs' own; random int8 stays in the gate up to 0.1 (0.2: mean 0.9887, min 0.9631)
    initializer_range: float = 0.02


# XLMRobertaModel, 6 layers of MiniLM's width: fast enough for a test fixture.
TINY_XLMR = Shape("xlm-roberta", layers=6, tokenizer_pieces=None, embedding_rows=None, max_seq_length=128)
# paraphrase-multilingual-MiniLM-L12-v2 (and multilingual-e5-small, max_seq_length 512): a BertModel
# over XLM-R's 250,002-piece tokenizer, its embedding matrix padded to 250,037 rows.
MULTILINGUAL_MINILM_L12 = Shape("bert", layers=12, tokenizer_pieces=250_002, embedding_rows=250_037, max_seq_length=128)


def corpus() -> list[str]:
    """Korean and English place text: the parity set and the Korean benchmark's places."""
    from benchmarks import korean_places
    from export_model.parity_texts import parity_texts

    return [*parity_texts(), *(t for lang in ("korean", "english") for t in korean_places.texts(lang))]


def train_tokenizer(pieces: int | None) -> Tokenizer:
    """A SentencePiece-style Unigram tokenizer as XLM-R's tokenizer.json has it, trained on corpus()."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=TRAINED_PIECES, special_tokens=list(SPECIALS), unk_token="<unk>")
    tokenizer.train_from_iterator(corpus(), trainer)
    if pieces is not None:
        tokenizer = _padded(tokenizer, pieces - 1)
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = processors.RobertaProcessing(sep=("</s>", 2), cls=("<s>", 0))
    return tokenizer


def _padded(tokenizer: Tokenizer, size: int) -> Tokenizer:
    """The trained pieces plus unreachable two-ideograph pieces up to `size`: a big vocabulary's memory."""
    data = json.loads(tokenizer.to_str())
    vocab = data["model"]["vocab"]
    known = {piece for piece, _ in vocab}
    code = 0
    while len(vocab) < size:
        piece = "▁" + chr(0x4E00 + code // 2000) + chr(0x4E00 + code % 2000)
        code += 1
        if piece not in known:
            vocab.append([piece, FILLER_SCORE])
    return Tokenizer.from_str(json.dumps(data))


def write_source(folder: Path, shape: Shape, seed: int = 0) -> Path:
    """A complete sentence-transformers folder (mean pooling) with random weights; returns `folder`."""
    import torch
    from transformers import BertConfig, BertModel, XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=train_tokenizer(shape.tokenizer_pieces),
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=512,
    )
    tokenizer.save_pretrained(str(folder))
    common = {
        "vocab_size": shape.embedding_rows or len(tokenizer),
        "hidden_size": 384,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "initializer_range": shape.initializer_range,
    }
    if shape.model_type == "xlm-roberta":
        config = XLMRobertaConfig(
            **common, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2
        )
        model_class = XLMRobertaModel
    else:
        config = BertConfig(**common, max_position_embeddings=512, type_vocab_size=2, pad_token_id=0)
        model_class = BertModel
    torch.manual_seed(seed)
    model_class(config).eval().save_pretrained(str(folder), safe_serialization=True)
    _write_json(folder / "sentence_bert_config.json", {"max_seq_length": shape.max_seq_length, "do_lower_case": False})
    _write_json(
        folder / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        ],
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    _write_json(
        folder / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": 384,
            "pooling_mode_cls_token": False,
            "pooling_mode_mean_tokens": True,
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        },
    )
    return folder


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, indent=2))


def run_export(source: Path, output: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m export_model --source ... --output ...` as an operator runs it."""
    return subprocess.run(
        [sys.executable, "-m", "export_model", "--source", str(source), "--output", str(output), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "LOG_LEVEL": "INFO", **env},
        timeout=600,
    )


@dataclass(frozen=True)
class TinyExport:
    source: Path  # the random sentence-transformers folder
    model_dir: Path  # what `python -m export_model --source` wrote from it
    stderr: str  # the export's output at the default LOG_LEVEL


def export_tiny_model(root: Path) -> TinyExport:
    """The tiny XLM-R model built into root/source and exported through the CLI into root/model (~25 s),
    or the one an earlier call left there."""
    log = root / "export.stderr"
    if not log.exists():
        source = write_source(root / "source", TINY_XLMR)
        result = run_export(source, root / "model")
        if result.returncode != 0:
            raise RuntimeError(f"export of the tiny model failed:\n{result.stderr}")
        log.write_text(result.stderr)
    return TinyExport(root / "source", root / "model", log.read_text())
