"""The contract between the generic trainer and a method (denoise, multi-task, cdn, dlw...).

The trainer knows no model, loss or dataset: a method builds them from the config. Everything a
method hands over is either an NNX module, numpy data, or a pure function traced inside the
trainer's single ``jax.jit`` (score_sde ``losses.py`` style: factories returning closures).
"""

from typing import Callable, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx

Batch = dict[str, np.ndarray]
Metrics = dict[str, jax.Array]
# loss_fn(model, batch, key) -> (scalar loss, metrics); runs under jit on the global batch.
LossFn = Callable[[nnx.Module, dict[str, jax.Array], jax.Array], tuple[jax.Array, Metrics]]


class BatchSource(Protocol):
    """Training data as a pure function of the step, so that resuming is exact."""

    def batch(self, step: int) -> Batch:
        """This process's rows of global batch ``step``."""


class Method(Protocol):
    name: str

    def build_model(self, config: ml_collections.ConfigDict) -> nnx.Module:
        """The model, initialised from ``config.seed``."""

    def train_data(
        self, config: ml_collections.ConfigDict, process_index: int, process_count: int
    ) -> BatchSource:
        """The training stream; each process materialises only its share of every batch."""

    def make_loss(self, config: ml_collections.ConfigDict) -> LossFn:
        """The training objective."""

    def make_validate(
        self, config: ml_collections.ConfigDict
    ) -> Callable[[nnx.Module], dict[str, float]] | None:
        """Held-out metrics computed on ``eval_every_steps``, or None."""
