"""Notebook-level entry points: ``train_and_evaluate(config, workdir)`` and ``evaluate(workdir)``.

They wire the method named by ``config.method`` to the generic trainer (``jaxden.train``), which
itself knows no method; ``train.py`` and ``eval.py`` only parse flags and call these.
"""

import ml_collections
from flax import nnx

from jaxden import methods
from jaxden.train.checkpoint import CheckpointNotFoundError, Checkpoints
from jaxden.train.loop import restore_model, train


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> nnx.Module:
    """Train (resuming from ``workdir`` if it has checkpoints); returns the trained model."""
    return train(methods.get(config.method), config, workdir)


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The config saved with the latest checkpoint in ``workdir``."""
    with Checkpoints(workdir, read_only=True) as checkpoints:
        return checkpoints.restore_config()


def saved_config(workdir: str | None) -> ml_collections.ConfigDict:
    """The saved config of ``workdir``, or an empty one when there is none (the caller reports
    the missing checkpoint)."""
    try:
        return load_config(workdir) if workdir else ml_collections.ConfigDict()
    except CheckpointNotFoundError:
        return ml_collections.ConfigDict()


def evaluate(workdir: str, config: ml_collections.ConfigDict | None = None) -> str:
    """Evaluate the latest checkpoint in ``workdir``; writes ``workdir/eval/``; returns the
    results as markdown."""
    config = config or load_config(workdir)
    method = methods.get(config.method)
    model, config, step = restore_model(method, workdir, config)
    return method.evaluate(model, config, workdir, step)
