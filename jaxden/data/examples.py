"""Labelled training examples as a pure function of (seed, step), like ``PatchSampler``.

Epoch ``e`` of the stream is a permutation of the examples drawn from ``(seed, e)`` and global
batch ``step`` is rows ``[step * B, (step + 1) * B)`` of the stream, so a resumed run sees the
batches a straight run saw, and each process gathers only its slice.
"""

import numpy as np

from jaxden.data.labelled import LabelledImages
from jaxden.data.patches import stream_rows


class ExampleSampler:
    """Seeded, resumable batches ``{"image": (b, H, W, C), "label": (b,)}`` of a
    ``LabelledImages`` set; with ``flip``, a seeded half of the rows is flipped left-right."""

    def __init__(self, examples: LabelledImages, *, seed: int, flip: bool = False):
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.examples, self.seed, self.flip = examples, seed, flip

    def __len__(self) -> int:
        return len(self.examples)

    def batch(self, step: int, batch_size: int, *, process_index: int = 0,
              process_count: int = 1) -> dict[str, np.ndarray]:
        rows, transforms = stream_rows(self.seed, len(self), step, batch_size, process_index,
                                       process_count)
        images = self.examples.images[rows]
        if self.flip:
            flipped = transforms >= 4  # half of the 8 seeded transforms are flips
            images[flipped] = images[flipped, :, ::-1]
        return {"image": images, "label": self.examples.labels[rows]}


class SamplerStream:
    """The trainer's ``BatchSource`` over a ``PatchSampler`` or an ``ExampleSampler``: this
    process's rows of global batch ``step``, as a dict (a sampler's array goes under
    ``field``)."""

    def __init__(self, sampler, batch_size: int, process_index: int, process_count: int,
                 field: str = "image"):
        self.sampler, self.batch_size, self.field = sampler, batch_size, field
        self.process_index, self.process_count = process_index, process_count

    def batch(self, step: int) -> dict[str, np.ndarray]:
        out = self.sampler.batch(step, self.batch_size, process_index=self.process_index,
                                 process_count=self.process_count)
        return out if isinstance(out, dict) else {self.field: out}
