"""Users' images -> classes: each image prepared as the model's dataset's were (a digit as
MNIST's, a garment as Fashion-MNIST's), then one batched forward pass.

``mlp predict`` and ``mlp serve`` both classify through ``classify``, so a
file given to one and posted to the other get the same probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .checkpoint import Checkpoint
from .dataset import to_input
from .imaging import PREPARATIONS, ImageError, Source, describe
from .mnist import dataset_of


@dataclass
class Prediction:
    """One image's result: where it came from, what the network saw, what it said."""

    source: str
    pixels: np.ndarray   # uint8 (28, 28): the prepared image, light on black
    proba: np.ndarray    # (10,) class probabilities
    class_names: Sequence[str]

    @property
    def digit(self) -> int:
        """The class read, as its index (for MNIST, the digit)."""
        return int(self.proba.argmax())

    @property
    def label(self) -> str:
        """The class read, by name."""
        return self.class_names[self.digit]

    @property
    def confidence(self) -> float:
        return float(self.proba.max())

    def top(self, k: int = 10) -> list[list[float]]:
        """The k likeliest digits, best first, as [[digit, probability], ...]."""
        order = np.argsort(self.proba, kind="stable")[::-1][:k]
        return [[int(d), float(self.proba[d])] for d in order]


def predict_pixels(model: Checkpoint, pixels: np.ndarray) -> np.ndarray:
    """Probabilities (n, 10) for prepared digits uint8 (n, 28, 28), scaled as in training."""
    return model.net.predict_proba(to_input(pixels, model.input_scale))


def classify(model: Checkpoint, sources: Sequence[Source]
             ) -> list[Prediction | ImageError]:
    """Each source's Prediction, or the ImageError that says why it has none; in order.

    Raises:
        ValueError: the model names a dataset this version does not know.
    """
    dataset = dataset_of(model.meta)
    prepare = PREPARATIONS[dataset.subject]
    prepared: list[np.ndarray | ImageError] = []
    for source in sources:
        try:
            prepared.append(prepare(source))                 # uint8 (28, 28)
        except ImageError as exc:
            prepared.append(exc)
    good = [p for p in prepared if isinstance(p, np.ndarray)]
    proba = iter(predict_pixels(model, np.stack(good)) if good else [])   # (n, 10)
    return [p if isinstance(p, ImageError) else
            Prediction(describe(s), p, next(proba), dataset.class_names)
            for s, p in zip(sources, prepared)]
