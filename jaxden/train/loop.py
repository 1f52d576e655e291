"""The generic training loop: any method, any number of devices and processes.

big_vision ``train.py`` in shape: build state, restore the latest checkpoint if there is one, then
``update`` per step; metrics stay on device and are fetched only on log steps (all pending steps
at once, so a NaN is caught at the exact step that made it); checkpoints every
``checkpoint_every_steps``, at the end, and at the step reached when SIGTERM (a preemption
notice) arrives, after which it stops with ``TrainingPreempted``. A resumed run continues from the
newest checkpoint that reads (a damaged one is reported and moved aside) and ends bitwise equal
to a straight run: the batch and the key of each step depend on the step only. Nothing here knows
which method it trains.
"""

import os
import time

import jax
import ml_collections
import numpy as np
from flax import nnx
from tqdm import tqdm

from jaxden.train import mesh as mesh_lib
from jaxden.train.checkpoint import Checkpoints
from jaxden.train.metrics_log import MetricsLog
from jaxden.train.optim import make_optimizer
from jaxden.train.plugin import Method
from jaxden.train.preemption import PreemptionNotice
from jaxden.train.state import abstract_like, init_state, merge_model, param_count
from jaxden.train.step import check_microbatches, make_update_fn


DIVERGENCE_SIGNALS = ("loss", "grad_norm")


class TrainingDiverged(FloatingPointError):
    """The loss or the gradient norm became NaN/Inf."""


class TrainingPreempted(Exception):
    """SIGTERM (a preemption notice) stopped training early, after a checkpoint of the step it
    had reached was written; the same command resumes from it. train.py exits with status 143."""


def _mean_checking_finite(pending: list, step: int, checkpoints: Checkpoints) -> dict:
    """Fetch the per-step metrics of steps ``step - len(pending) + 1 .. step``, stop at the
    first step whose loss or gradient norm is NaN/Inf, and return their means, plus the
    window's largest loss and gradient norm (``loss_max``, ``grad_norm_max``: spikes)."""
    fetched = jax.device_get(pending)
    for i, m in enumerate(fetched):
        bad = [k for k in DIVERGENCE_SIGNALS if not np.isfinite(m[k])]
        if bad:
            last = checkpoints.latest_step()
            kept = (f"the checkpoints in {checkpoints.directory} (latest: step {last}) are intact"
                    if last is not None else "no checkpoint had been written yet")
            raise TrainingDiverged(
                f"{' and '.join(bad)} became NaN/Inf at step {step - len(fetched) + i + 1}; "
                f"{kept}. Lower --config.optimizer.learning_rate or set "
                f"--config.optimizer.grad_clip_norm, and check the data for NaN."
            )
    means = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[-1]}
    means.update({f"{k}_max": float(np.max([m[k] for m in fetched])) for k in DIVERGENCE_SIGNALS})
    return means


def _initial_state(method: Method, config: ml_collections.ConfigDict, replicated):
    """(graphdef, replicated step-0 state, optimiser, schedule) of ``method`` under ``config``:
    the state to train from, or the layout to restore a checkpoint into."""
    tx, schedule = make_optimizer(config.optimizer, config.total_steps)
    graphdef, state = init_state(method.build_model(config), tx)
    return graphdef, jax.device_put(state, replicated), tx, schedule


def _write_config(workdir: str, config: ml_collections.ConfigDict,
                  checkpoints: Checkpoints) -> None:
    path = os.path.join(workdir, "config.json")
    with checkpoints.reporting_full_disk(path):
        with open(path + ".tmp", "w") as f:  # then renamed: a kill never leaves half a file
            f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
        os.replace(path + ".tmp", path)


def train(
    method: Method,
    config: ml_collections.ConfigDict,
    workdir: str,
    mesh: jax.sharding.Mesh | None = None,
) -> nnx.Module:
    """Train ``method`` as ``config`` says, in ``workdir``; resumes from its latest checkpoint.

    ``mesh`` defaults to a ``data`` axis over all devices. Returns the trained model. Writes
    ``workdir/metrics.jsonl``, ``workdir/config.json`` and ``workdir/checkpoints/``.
    """
    os.makedirs(workdir, exist_ok=True)
    is_chief = jax.process_index() == 0
    mesh = mesh or mesh_lib.data_mesh()
    replicated, data_sharding = mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)
    mesh_lib.check_batch_size(config.batch_size, mesh)
    microbatches = config.get("microbatches", 1)
    check_microbatches(microbatches, config.batch_size, mesh.size)
    # The data first: a bad dataset fails in seconds, before compiling, and leaves an existing
    # run as it was.
    data = method.train_data(config, jax.process_index(), jax.process_count())
    validate = method.make_validate(config)

    graphdef, state, tx, schedule = _initial_state(method, config, replicated)
    update = make_update_fn(graphdef, method.make_loss(config), tx, config.seed,
                            jax.tree.map(lambda x: x.sharding, state), replicated, microbatches)
    log = MetricsLog(workdir, enabled=is_chief)
    total = config.total_steps

    with (Checkpoints(workdir, max_to_keep=config.get("max_checkpoints_to_keep", 3))
          as checkpoints, PreemptionNotice() as preempted):
        # The newest checkpoint that reads; a damaged one is reported and moved aside.
        start, state = checkpoints.newest_readable(
            lambda step: checkpoints.restore_state(abstract_like(state), step)) or (0, state)
        if start:
            with checkpoints.reporting_full_disk(log.path):
                log.truncate_after(start)
            if is_chief:
                tqdm.write(f"{method.name}: resuming from checkpoint {start} in "
                           f"{checkpoints.directory}")
        if is_chief and start == 0:  # a resumed run's config.json changes with its checkpoints
            _write_config(workdir, config, checkpoints)
            tqdm.write(f"{method.name}: {param_count(state):,} parameters, {mesh.size} "
                       f"device(s), {jax.process_count()} process(es); workdir {workdir}")

        # XLA:CPU with several (simulated) devices can deadlock when two steps' all-reduces are
        # in flight at once on a small host thread pool (seen on 2 cores x 8 devices: "only 6
        # of 8 arrived" at the rendezvous); there, wait for each step before the next.
        one_step_in_flight = jax.default_backend() == "cpu" and mesh.size > 1
        pending, t0, t0_step, stopped_at = [], time.perf_counter(), start, None
        with tqdm(total=total, initial=start, disable=not is_chief, unit="step",
                  desc=f"train {method.name}", dynamic_ncols=True) as bar:
            for step in range(start + 1, total + 1):
                state, metrics = update(state, mesh_lib.global_batch(data.batch(step - 1),
                                                                     data_sharding))
                pending.append(metrics)
                if one_step_in_flight:
                    jax.block_until_ready(metrics)
                bar.update(1)
                stop = step < total and preempted(step)  # SIGTERM: save this step and stop
                log_now = step % config.log_every_steps == 0 or step == total
                ckpt_now = step % config.checkpoint_every_steps == 0 or step == total or stop
                eval_now = validate is not None and (
                    step % config.eval_every_steps == 0 or step == total)
                if not (log_now or ckpt_now or eval_now):
                    continue
                means, pending = _mean_checking_finite(pending, step, checkpoints), []
                if log_now:
                    rate = (step - t0_step) / (time.perf_counter() - t0)
                    means.update(lr=float(schedule(step - 1)), steps_per_sec=rate,
                                 examples_per_sec=rate * config.batch_size)
                if eval_now:
                    means.update(validate(merge_model(graphdef, state)))
                if log_now or eval_now:
                    with checkpoints.reporting_full_disk(log.path):
                        log.write(step, means)
                    bar.set_postfix(loss=f"{means['loss']:.4g}")
                if ckpt_now:
                    checkpoints.save(step, state, config)
                    if is_chief:
                        _write_config(workdir, config, checkpoints)
                if log_now:  # steps/s counts training steps only, not validation or saving
                    t0, t0_step = time.perf_counter(), step
                if stop:
                    stopped_at = step
                    break
    if stopped_at is not None:  # raised once the checkpoint is written (Checkpoints.close)
        raise TrainingPreempted(
            f"stopped by SIGTERM at step {stopped_at} of {total}; checkpoint {stopped_at} is "
            f"saved in {checkpoints.directory}; the same command resumes from it")
    return merge_model(graphdef, state)


def restore_model(
    method: Method, workdir: str, config: ml_collections.ConfigDict | None = None
) -> tuple[nnx.Module, ml_collections.ConfigDict, int]:
    """(model, config, step) from the latest readable checkpoint in ``workdir`` (a damaged one
    is reported and skipped, and left in place); the config saved with the checkpoint is used
    unless one is given."""
    replicated = mesh_lib.replicated(mesh_lib.data_mesh())
    with Checkpoints(workdir, read_only=True) as checkpoints:

        def restore(step):
            step_config = config or checkpoints.restore_config(step)
            graphdef, state, _, _ = _initial_state(method, step_config, replicated)
            return graphdef, checkpoints.restore_state(abstract_like(state), step), step_config

        step, (graphdef, state, config) = checkpoints.newest_readable(restore, required=True)
    return merge_model(graphdef, state), config, step
