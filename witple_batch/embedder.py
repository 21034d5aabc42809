"""int8 MiniLM sentence embeddings with onnxruntime and tokenizers only.

Mean pooling and L2 normalisation live here and nowhere else: the exported graph returns
token states. Importing this module must not pull in torch or transformers (the shard image
has neither).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from witple_batch.cpu import available_cpus
from witple_batch.model_files import EMBEDDING_DIM, MODEL_FILE, TOKENIZER_FILE, ModelError, verify_model_dir

# Measured on 2 AVX2 cores: 32 beats 8, 16, 64 and 128 once batches are length-sorted.
DEFAULT_BATCH_SIZE = 32


class Embedder:
    def __init__(self, model_dir: Path, *, threads: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> None:
        self.manifest = verify_model_dir(model_dir)
        self.batch_size = batch_size
        self.threads = threads or available_cpus()
        try:
            self._tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
            raise ModelError(f"{model_dir / TOKENIZER_FILE} cannot be loaded: {exc}") from None
        # Each batch is padded to its own longest text, never to a fixed length.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(self.manifest.max_seq_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(
                str(model_dir / MODEL_FILE), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises untyped Fail/InvalidGraph errors
            raise ModelError(f"{model_dir / MODEL_FILE} cannot be loaded: {exc}") from None
        self._input_names = {i.name for i in self._session.get_inputs()}

    @property
    def dim(self) -> int:
        return EMBEDDING_DIM

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (n, 384), L2-normalised, rows in input order."""
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=True)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        # Sorting by length keeps padding (wasted FLOPs) near zero; stable for determinism.
        order = np.argsort(lengths, kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            width = int(lengths[rows].max())
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for i, row in enumerate(rows):
                n = lengths[row]
                ids[i, :n] = encodings[row].ids
                mask[i, :n] = 1
            out[rows] = self._pool(self._run(ids, mask), mask)
        return out

    def _run(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        return self._session.run(None, feed)[0]

    @staticmethod
    def _pool(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
        weights = mask[..., None].astype(np.float32)
        summed = (states * weights).sum(axis=1)
        mean = summed / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(mean, axis=1, keepdims=True)
        return (mean / np.maximum(norms, 1e-12)).astype(np.float32)
