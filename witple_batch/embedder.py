"""int8 MiniLM sentence embeddings with onnxruntime and tokenizers only.

Mean pooling and L2 normalisation live here and nowhere else: the exported graph returns
token states. Importing this module must not pull in torch or transformers (the shard image
has neither).

Each text runs alone (a batch of one, so no padding at all), `threads` texts at a time.
Dynamic int8 quantises activations with one scale per tensor, so in a batch a text's vector
would depend on its batch mates, and the same place would get different vectors in different
shards. Alone, a text's vector depends on the text only; batching is not faster on catalogue
texts anyway (`python -m benchmarks.embedding throughput`).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from witple_batch.model_files import (
    EMBEDDING_DIM,
    MODEL_FILE,
    TEXT_PREFIX_KEY,
    TOKENIZER_FILE,
    ModelError,
    ModelManifest,
    verify_model_dir,
)
from witple_batch.resources import available_cpus

# The export leaves residual adds and layer norms unfused: onnxruntime 1.32's CPU
# SkipLayerNormalization spent 1.06 ms of kernel time per sample text (median 41 tokens) where
# Add + LayerNormalization spend 0.28 ms (benchmarks.embedding recipes, one thread), and the
# session would fuse them back at ORT_ENABLE_ALL. A session option rather than the binding's
# `disabled_optimizers` argument, which its fallback session (after a provider failure) drops.
UNFUSED = "SkipLayerNormFusion"
FED_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # each fed only when the graph declares it


def _session_options(options: ort.SessionOptions | None) -> ort.SessionOptions:
    """What every embedder session needs, set on `options` (a fresh one if None); the rest is the caller's.

    One op thread: parallel across texts, not inside one (short sequences leave a second idle).
    """
    options = options if options is not None else ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("optimization.disable_specified_optimizers", UNFUSED)
    return options


class Embedder:
    def __init__(
        self,
        model_dir: Path,
        *,
        threads: int | None = None,
        manifest: ModelManifest | None = None,
        options: ort.SessionOptions | None = None,
    ) -> None:
        """`manifest`: what verify_model_dir(model_dir) already returned, so the files are not hashed twice.

        `options`: onnxruntime session options with more set (profiling, say), for benchmarks and
        tests; the embedder sets its own threads, optimisation level and unfused layer norms on them.
        """
        self.manifest = manifest or verify_model_dir(model_dir)
        self.threads = threads or available_cpus()
        try:
            self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise ModelError(f"{model_dir / TOKENIZER_FILE} cannot be loaded: {exc}") from None
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.manifest.max_seq_length)
        try:
            self._session = ort.InferenceSession(
                str(model_dir / MODEL_FILE), _session_options(options), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped Fail/InvalidGraph errors
            raise ModelError(f"{model_dir / MODEL_FILE} cannot be loaded: {exc}") from None
        self._input_names = {i.name for i in self._session.get_inputs()}
        if unknown := self._input_names - set(FED_INPUTS):
            raise ModelError(f"{model_dir / MODEL_FILE} needs {sorted(unknown)}; the embedder feeds only {FED_INPUTS}")
        # in the graph, not the manifest: the prefix changes every vector, so model.onnx's sha256 must cover it
        self.text_prefix = self._session.get_modelmeta().custom_metadata_map.get(TEXT_PREFIX_KEY, "")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, 384), L2-normalised, rows in input order; each row a function of its text alone."""
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self.tokenize(texts)

        def embed_one(row: int) -> None:
            ids = np.asarray([encodings[row].ids], dtype=np.int64)
            out[row] = self._pool(self._run(ids))

        # longest first, so the workers finish together
        order = sorted(range(len(texts)), key=lambda row: -len(encodings[row].ids))
        if self.threads == 1:
            for row in order:
                embed_one(row)
        else:
            with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="embed") as pool:
                list(pool.map(embed_one, order))
        return out

    def tokenize(self, texts: Sequence[str]) -> list[Encoding]:
        """The model's tokens for each text, prefixed, special tokens added and truncated as embedding does."""
        return self._tokenizer.encode_batch([self.text_prefix + text for text in texts], add_special_tokens=True)

    def _run(self, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """Token states for `ids`; `mask` marks padding (benchmarks.embedding throughput feeds padded batches)."""
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids) if mask is None else mask,
            "token_type_ids": np.zeros_like(ids),
        }
        return self._session.run(None, {name: feed[name] for name in self._input_names})[0]

    @staticmethod
    def _pool(states: np.ndarray) -> np.ndarray:
        """Mean over tokens (no padding to mask out), then L2 normalisation; (1, seq, 384) -> (384,)."""
        mean = states[0].mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)
