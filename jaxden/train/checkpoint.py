"""Orbax checkpoints of train state + config in ``WORKDIR/checkpoints``.

Each checkpoint is a composite of the train state (a pytree of arrays, restored against an
abstract, sharded target) and the config as JSON, so that ``eval.py --workdir`` needs nothing else.
Neither part is pickled: the state is arrays (tensorstore/OCDBT) with JSON metadata, the config is
JSON, so restoring one runs no code from the workdir. Saving is asynchronous; ``close()`` waits
for the last write and surfaces its error.

Faults:
- A save interrupted (SIGKILL, power) leaves ``<step>.orbax-checkpoint-tmp``, which Orbax never
  takes for a checkpoint (only ``<step>`` directories count, renamed into place when complete);
  the next run removes it.
- A damaged checkpoint (a file missing, truncated or overwritten) fails to restore with
  ``CheckpointCorruptError``; ``newest_readable`` then reports it in one line, moves it aside to
  ``<step>.corrupt-<time>`` (read-only: leaves it and skips it) and falls back to the one before.
- A failed write (disk full, ...) raises ``CheckpointWriteError`` naming the step, the directory
  and the latest intact checkpoint. A full disk met while writing another file of the workdir
  (``reporting_full_disk``: the metrics log, config.json) is reported the same way: as the
  in-flight save's failure where the disk filled under it, else naming the file.
"""

import contextlib
import datetime
import errno
import gc
import logging
import os
import sys
import warnings
from typing import Callable, TypeVar

import jax
import ml_collections
from etils import epath
from ml_collections import config_dict
import orbax.checkpoint as ocp

from jaxden.train.state import State

STATE, CONFIG = "state", "config"


class CheckpointNotFoundError(FileNotFoundError):
    """No checkpoint in a workdir that should have one."""


class CheckpointMismatchError(ValueError):
    """A checkpoint written for another model or optimiser configuration."""


class CheckpointCorruptError(ValueError):
    """A checkpoint whose files are missing, truncated or damaged."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, ...); the earlier ones are intact."""


T = TypeVar("T")
# What reading a damaged checkpoint raises: tensorstore reports missing or damaged files as
# ValueError (NOT_FOUND, DATA_LOSS, OUT_OF_RANGE), JSON as JSONDecodeError/UnicodeDecodeError
# (ValueErrors), Orbax a missing file as FileNotFoundError. Not PermissionError: a checkpoint
# that cannot be read for want of rights is not damaged, and is never moved aside.
_DAMAGE = (ValueError, OSError, KeyError, TypeError)
_REPORTED: set[tuple[str, int]] = set()  # (directory, step) already reported in this process


class Checkpoints:
    def __init__(self, workdir: str, max_to_keep: int = 3, read_only: bool = False):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        if read_only and not os.path.isdir(self.directory):
            raise self._not_found()
        self.read_only = read_only
        options = (
            ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
            if read_only
            # cleanup_tmp_directories: remove the leftovers of saves that a kill interrupted.
            else ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                              cleanup_tmp_directories=True)
        )
        _hide_orphaned_orbax_callbacks()
        _hide_unretrieved_tensorstore_errors()
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=(STATE, CONFIG)
        )
        self._pending: int | None = None  # the step whose asynchronous save may still be running

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def steps(self) -> list[int]:
        """The steps of the complete checkpoints, newest first."""
        return sorted(self._manager.all_steps(), reverse=True)

    def save(self, step: int, state: State, config: ml_collections.ConfigDict) -> None:
        """Start saving ``state`` and ``config`` as checkpoint ``step`` (asynchronous). Raises
        CheckpointWriteError for this save or the previous one, whose error surfaces here."""
        self._wait()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(**{STATE: ocp.args.StandardSave(state),
                                           CONFIG: ocp.args.JsonSave(config.to_dict())}),
            )
        except Exception as e:  # noqa: BLE001 - any failure to write is reported the same way
            raise self._write_failed(step, e) from e
        self._pending = step

    def _wait(self) -> None:
        """Wait for the pending save; a failure of it becomes a CheckpointWriteError."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # noqa: BLE001
            step, self._pending = self._pending, None
            raise self._write_failed(step, e) from e
        self._pending = None

    @contextlib.contextmanager
    def reporting_full_disk(self, path: str):
        """Around a write of another file of the workdir (the metrics log, config.json): a full
        disk or quota is reported as the in-flight save's CheckpointWriteError where that save
        failed (the disk filled under it), else as a CheckpointWriteError naming ``path`` and
        the latest intact checkpoint. Other errors pass unchanged."""
        try:
            yield
        except OSError as e:
            if not _no_space(e):
                raise
            self._wait()
            raise CheckpointWriteError(self._no_space_message(path, None)) from e

    def _write_failed(self, step: int | None, error: Exception) -> CheckpointWriteError:
        if _no_space(error):
            return CheckpointWriteError(self._no_space_message(
                f"checkpoint {step} to {self.directory}", step))
        return CheckpointWriteError(
            f"could not write checkpoint {step} to {self.directory} ({_first_line(error)}); "
            f"{self._kept(step)}")

    def _no_space_message(self, what: str, step: int | None) -> str:
        return (f"no space left on device while writing {what}: free space or use another "
                f"--workdir ({self._kept(step)}; the same command resumes from it)")

    def _kept(self, failed_step: int | None) -> str:
        intact = [s for s in _complete_steps(self.directory) if s != failed_step]
        return (f"checkpoint {max(intact)} there is intact" if intact
                else "no earlier checkpoint had been written")

    def restore_state(self, abstract_state: State, step: int | None = None) -> State:
        """Checkpoint ``step``'s train state (default: the latest), laid out as ``abstract_state``.
        Raises CheckpointMismatchError for another model's checkpoint, CheckpointCorruptError
        for a damaged one."""
        step = self.require_step(step)
        self._check_fits(step, abstract_state)
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state)})
            )
        except _DAMAGE as e:  # the tree and shapes fit (checked above): the files are damaged
            raise self._corrupt(step, e, "its arrays") from e
        return restored[STATE]

    def _check_fits(self, step: int, abstract_state: State) -> None:
        """Compare the state's tree and shapes with the checkpoint's metadata before Orbax reads
        arrays, so that a checkpoint of another model (or optimiser) is reported by name, and
        any later failure to read it means damage. Parameters are named first."""
        path = epath.Path(self.directory) / str(step) / STATE
        handler = ocp.StandardCheckpointHandler()
        try:
            stored = _shapes_by_path(handler.metadata(path).tree)
        except _DAMAGE as e:
            raise self._corrupt(step, e, "its state metadata") from e
        finally:
            handler.close()
        wanted = _shapes_by_path(abstract_state)
        params_first = lambda key: (not key.startswith("params."), key)  # noqa: E731
        for key in sorted(set(stored) | set(wanted), key=params_first):
            have, want = stored.get(key, "absent"), wanted.get(key, "absent")
            if have != want:
                raise self._mismatch(step, f"{key}: checkpoint {have}, this config {want}")

    def _corrupt(self, step: int, error: BaseException, part: str) -> CheckpointCorruptError:
        if isinstance(error, PermissionError):  # unreadable for want of rights, not damaged
            raise error
        reason = f"{part} cannot be read ({_first_line(error)})"
        corrupt = CheckpointCorruptError(
            f"checkpoint {step} in {self.directory} is damaged: {reason}")
        corrupt.reason = reason
        return corrupt

    def newest_readable(self, restore: Callable[[int], T],
                        required: bool = False) -> tuple[int, T] | None:
        """``(step, restore(step))`` for the newest checkpoint that ``restore`` reads without a
        CheckpointCorruptError; None if there is none (``required``: raise instead).

        Each damaged checkpoint is reported in one line on stderr and moved aside to
        ``<step>.corrupt-<time>`` (read-only: left in place and skipped); nothing is deleted.
        """
        damaged = []
        for step in self.steps():
            try:
                return step, restore(step)
            except CheckpointCorruptError as e:
                damaged.append(self._set_aside(step, e))
            _finalise_orphans()
        if required and damaged:
            kept = "left in place" if self.read_only else "moved aside to <step>.corrupt-<time>"
            raise CheckpointCorruptError(
                f"no readable checkpoint in {self.directory} ({'; '.join(damaged)}; {kept}); "
                f"train again (`python train.py --config ... --workdir "
                f"{os.path.dirname(self.directory)}`)")
        if required:
            raise self._not_found()
        return None

    def _set_aside(self, step: int, error: CheckpointCorruptError) -> str:
        """Move the damaged checkpoint ``step`` out of Orbax's sight (read-only: leave it), say
        so once per process, and return what is wrong with it, briefly."""
        source = os.path.join(self.directory, str(step))
        if self.read_only:
            done = f"left {source} in place and skipped it"
        else:
            stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
            target = f"{source}.corrupt-{stamp}"
            if jax.process_index() == 0:
                try:
                    os.rename(source, target)
                except OSError as e:
                    raise CheckpointCorruptError(
                        f"{error}; it could not be moved aside ({_first_line(e)}): move or "
                        f"delete {source}, then run again") from e
            if jax.process_count() > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices(f"jaxden_set_aside_{step}")
            self._manager.reload()
            done = f"moved it to {target}"
        if jax.process_index() == 0 and (self.directory, step) not in _REPORTED:
            _REPORTED.add((self.directory, step))
            print(f"warning: {error}; {done}, falling back to the previous checkpoint",
                  file=sys.stderr, flush=True)
        return f"checkpoint {step}: {getattr(error, 'reason', error)}"

    def _mismatch(self, step: int, reason: str) -> "CheckpointMismatchError":
        return CheckpointMismatchError(
            f"checkpoint {step} in {self.directory} does not fit the model and optimiser of "
            f"this config ({reason}); resume with the run's own config "
            f"({os.path.dirname(self.directory)}/config.json) or use a new --workdir")

    def restore_config(self, step: int | None = None) -> ml_collections.ConfigDict:
        """The config saved with checkpoint ``step``; by default with the newest readable one
        (see ``newest_readable``). JSON only: reading it runs no code."""
        if step is None:
            return self.newest_readable(self.restore_config, required=True)[1]
        try:
            restored = self._manager.restore(
                step, args=ocp.args.Composite(**{CONFIG: ocp.args.JsonRestore()})
            )[CONFIG]
        except _DAMAGE as e:
            raise self._corrupt(step, e, "its config") from e
        if not isinstance(restored, dict):
            raise self._corrupt(step, TypeError(f"a JSON {type(restored).__name__}, not an object"),
                                "its config")
        return ml_collections.ConfigDict(_overridable(restored))

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
        """Wait for the last save (raising CheckpointWriteError if it failed) and close."""
        try:
            self._wait()
        finally:
            self._manager.close()

    def __enter__(self) -> "Checkpoints":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
            return
        try:  # an error is on its way out already: do not hide it behind a second one
            self.close()
        except Exception:  # noqa: BLE001
            pass


def _complete_steps(directory: str) -> list[int]:
    """The steps with a complete checkpoint on disk (Orbax renames ``<step>.orbax-checkpoint-tmp``
    to ``<step>`` once every file is written)."""
    try:
        return sorted(int(n) for n in os.listdir(directory) if n.isdigit())
    except OSError:
        return []


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or repr(error)
    return f"{type(error).__name__}: {text[:300]}"


def _no_space(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a full disk or an exhausted quota; tensorstore
    reports it as a ValueError ending in ``No space left on device [os_error_code='28']``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(s in str(error) for s in ("No space left on device", "Disk quota exceeded",
                                          f"os_error_code='{errno.ENOSPC}'")):
            return True
        error = error.__cause__ or error.__context__
    return False


def _finalise_orphans() -> None:
    """Finalise now, quietly, the coroutines that a failed Orbax read left unawaited (once the
    error that referenced them is gone), rather than with warnings at some later moment."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "coroutine ... was never awaited"
        gc.collect()


def _hide_orphaned_orbax_callbacks() -> None:
    """When one read or write of an Orbax restore/save fails, its other tensorstore operations
    finish later into an event loop that Orbax has closed, and its other coroutines are
    finalised unawaited; Python prints each as an 'Exception ignored in ...' traceback (through
    ``sys.unraisablehook``: 'RuntimeError: Event loop is closed', or an error of an Orbax
    coroutine), long after the failure was raised and handled. Hide those, and only those, for
    the rest of the process."""
    previous = sys.unraisablehook
    if getattr(previous, "_jaxden_orbax_filter", False):
        return

    def hook(unraisable):
        value, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:
            return
        previous(unraisable)

    hook._jaxden_orbax_filter = True
    sys.unraisablehook = hook


class _UnretrievedTensorstoreErrors(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" and "Future exception was never
    retrieved" reports of a tensorstore error."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        headline = str(record.msg).split("\n", 1)[0]
        return not (headline in ("Task exception was never retrieved",
                                 "Future exception was never retrieved")
                    and "tensorstore" in str(error))


def _hide_unretrieved_tensorstore_errors() -> None:
    """When Orbax reads a damaged checkpoint, several of its concurrent tensorstore reads can
    fail; the first error is raised (and reported as one line by ``newest_readable``), and
    asyncio reports each other one as "Task exception was never retrieved" (with its
    traceback) or, for a tensorstore future that no task awaited, "Future exception was
    never retrieved" (three lines under absl's logging: as many as the extra lines that failed
    ``tests/test_faults.py`` in CI, whose text pytest cut short), whenever it is
    garbage-collected (1 in 60 restores of a truncated checkpoint, one-off script). Drop those
    reports, and only those, from the ``asyncio`` logger for the rest of the process."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _UnretrievedTensorstoreErrors) for f in logger.filters):
        logger.addFilter(_UnretrievedTensorstoreErrors())


def _shapes_by_path(tree) -> dict[str, tuple]:
    """{"encoder.0.convs.0.kernel": shape, ...}; list indices, dict keys and namedtuple fields
    (optax states) spelt alike, as Orbax stores them all as strings."""
    return {".".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
                     for k in path): leaf.shape
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
