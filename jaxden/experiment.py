"""Notebook-level entry points: ``train_and_evaluate(config, workdir)`` and ``evaluate(workdir)``.

They wire the method named by ``config.method`` to the generic trainer (``jaxden.train``), which
itself knows no method; ``train.py`` and ``eval.py`` only parse flags and call these.
"""

import os

import ml_collections
from flax import nnx

from jaxden import methods
from jaxden.train.checkpoint import (CheckpointMismatchError, CheckpointNotFoundError,
                                     Checkpoints)
from jaxden.train.loop import restore_model, train


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> nnx.Module:
    """Train (resuming from ``workdir`` if it has checkpoints); returns the trained model."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir} is a file, not a folder: pass a new folder (or a "
                         f"run's folder, to resume) as --workdir")
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
    try:
        model, config, step = restore_model(method, workdir, config)
    except CheckpointMismatchError as e:
        raise _eval_mismatch(e, load_config(workdir), config) from e
    return method.evaluate(model, config, workdir, step)


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _eval_mismatch(error: CheckpointMismatchError, saved: ml_collections.ConfigDict,
                   given: ml_collections.ConfigDict) -> CheckpointMismatchError:
    """The mismatch of an evaluation, naming the overrides of the run's saved config that
    change its model (evaluation settings, under ``eval.``, cannot)."""
    old, new = _flat(saved.to_dict()), _flat(given.to_dict())
    changed = [k for k in sorted(set(old) | set(new))
               if not k.startswith("eval.") and old.get(k) != new.get(k)]
    if not changed:
        return error
    what = str(error).split("; resume with")[0]
    return CheckpointMismatchError(
        f"{what}: the run was trained with {', '.join(f'{k}={old.get(k)}' for k in changed)}, "
        f"this evaluation asks for {', '.join(f'{k}={new.get(k)}' for k in changed)}; drop "
        f"{', '.join(f'--config.{k}' for k in changed)} (eval.py takes the model from the "
        f"run's saved config)")
