"""Orbax checkpoints of train state + config in ``WORKDIR/checkpoints``.

Each checkpoint is a composite of the train state (a pytree of arrays, restored against an
abstract, sharded target) and the config as JSON, so that ``eval.py --workdir`` needs nothing else.
Neither part is pickled. Saving is asynchronous; ``close()`` waits for the last write.
"""

import os

import jax
import ml_collections
from ml_collections import config_dict
import orbax.checkpoint as ocp

from jaxden.train.state import State

STATE, CONFIG = "state", "config"


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint in a workdir that should have one."""


class CheckpointMismatchError(ValueError):
    """A checkpoint written for another model or optimiser configuration."""


class Checkpoints:
    def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if read_only and not os.path.isdir(self.directory):
            raise self._not_found()
        options = (
            ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
            if read_only
            else ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        )
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE, CONFIG)
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: State, config: ml_collections.ConfigDict) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                **{STATE: ocp.args.StandardSave(state), CONFIG: ocp.args.JsonSave(config.to_dict())}
            ),
        )

    def restore_state(self, abstract_state: State, step: int | None = None) -> State:
        step = self.require_step(step)
        self._check_params_fit(step, abstract_state["params"])
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)})
            )
        except ValueError as e:  # orbax: a stored array's shape or the tree does not match
            raise self._mismatch(step, str(e).splitlines()[0].split(":")[0][:200]) from e
        return restored[STATE]

    def _check_params_fit(self, step: int, abstract_params) -> None:
        """Compare parameter shapes with the checkpoint's metadata before Orbax reads arrays,
        so that a checkpoint of another model is reported by name and Orbax is left clean."""
        with ocp.StandardCheckpointer() as reader:
            stored = reader.metadata(os.path.join(self.directory, str(step), STATE))
        stored = _shapes_by_path(stored.item_metadata.tree["params"])
        wanted = _shapes_by_path(abstract_params)
        for path in sorted(set(stored) | set(wanted)):
            have, want = stored.get(path, "absent"), wanted.get(path, "absent")
            if have != want:
                raise self._mismatch(step, f"params.{path}: checkpoint {have}, "
                                           f"this config {want}")

    def _mismatch(self, step: int, reason: str) -> "CheckpointMismatchError":
        return CheckpointMismatchError(
            f"checkpoint {step} in {self.directory} does not fit the model and optimiser of "
            f"this config ({reason}); resume with the run's own config "
            f"({os.path.dirname(self.directory)}/config.json) or use a new --workdir")

    def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        step = self.require_step(step)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()})
        )
        return ml_collections.ConfigDict(_overridable(restored[CONFIG]))

    def require_step(self, step: int | None) -> int:
        step = self.latest_step() if step is None else step
        if step is None:
            raise self._not_found()
        return step

    def _not_found(self) -> CheckpointNotFoundError:
        return CheckpointNotFoundError(
            f"no checkpoint in {self.directory}; train first with "
            f"`python train.py --config configs/... --workdir {os.path.dirname(self.directory)}`."
        )

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _shapes_by_path(tree) -> dict[str, tuple]:
    """{"encoder.0.convs.0.kernel": shape, ...}; list indices and dict keys spelt alike, as
    Orbax stores integer keys as strings."""
    return {".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): leaf.shape
            for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _overridable(tree):
    """A saved config made overridable from the command line again: JSON has no tuples
    (configs use them, e.g. ``eval.sigmas``, and only tuples can be overridden), and a
    placeholder saved as null comes back as an untyped placeholder, which
    ``--config.eval.max_examples=2000`` can set (a plain None field cannot be overridden)."""
    if isinstance(tree, dict):
        return {k: _overridable(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return tuple(_overridable(v) for v in tree)
    return config_dict.placeholder(object) if tree is None else tree
