"""The parity gate: the int8 model against the FP32 sentence-transformers reference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export_model.parity_texts import parity_texts
from witple_batch.embedder import Embedder

MIN_MEAN_COSINE = 0.99
MIN_MIN_COSINE = 0.97


class ParityError(Exception):
    """The quantised model drifted too far from the reference."""


@dataclass(frozen=True)
class Parity:
    texts: int
    mean_cosine: float
    min_cosine: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "texts": self.texts,
            "mean_cosine": round(self.mean_cosine, 6),
            "min_cosine": round(self.min_cosine, 6),
            "gate_mean": MIN_MEAN_COSINE,
            "gate_min": MIN_MIN_COSINE,
        }

    @property
    def passes(self) -> bool:
        return self.mean_cosine >= MIN_MEAN_COSINE and self.min_cosine >= MIN_MIN_COSINE

    def check(self) -> None:
        if not self.passes:
            raise ParityError(
                f"int8 model fails the parity gate: mean cosine {self.mean_cosine:.4f} "
                f"(needs >= {MIN_MEAN_COSINE}), min cosine {self.min_cosine:.4f} (needs >= {MIN_MIN_COSINE})"
            )


def reference_embeddings(source: Path, texts: list[str], threads: int) -> np.ndarray:
    """FP32 PyTorch embeddings from sentence-transformers on the same weights."""
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    model = SentenceTransformer(str(source), device="cpu", local_files_only=True)
    return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)


def compare(reference: np.ndarray, ours: np.ndarray) -> Parity:
    """Row by row: both sides L2-normalised, so a dot product is the cosine."""
    if reference.shape != ours.shape:
        raise ValueError(f"cannot compare embeddings of shapes {reference.shape} and {ours.shape}")
    cosines = (reference * ours).sum(axis=1)
    return Parity(texts=len(cosines), mean_cosine=float(cosines.mean()), min_cosine=float(cosines.min()))


def measure(source: Path, model_dir: Path, threads: int) -> Parity:
    texts = parity_texts()
    embedder = Embedder(model_dir, threads=threads)
    # the reference reads the texts as the model will: with the prefix it carries (e5's "query: ")
    reference = reference_embeddings(source, [embedder.text_prefix + text for text in texts], threads)
    return compare(reference, embedder.embed(texts))
