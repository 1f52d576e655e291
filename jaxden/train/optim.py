"""Optax optimiser and learning-rate schedule from ``config.optimizer``."""

import ml_collections
import optax

SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
    """Linear warm-up for ``opt.warmup_steps``, then constant or cosine decay to ``opt.end_lr``."""
    warmup = int(opt.get("warmup_steps", 0))
    peak = float(opt.learning_rate)
    if opt.schedule == "constant":
        decay = optax.constant_schedule(peak)
    elif opt.schedule == "cosine":
        decay = optax.cosine_decay_schedule(
            peak, max(1, total_steps - warmup), alpha=float(opt.get("end_lr", 0.0)) / peak
        )
    else:
        raise ValueError(f"config.optimizer.schedule={opt.schedule!r}; choose one of {SCHEDULES}")
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(
    opt: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser named by ``opt.name`` with optional global-norm gradient clipping."""
    schedule = learning_rate_schedule(opt, total_steps)
    if opt.name == "adam":
        tx = optax.adam(schedule, b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999))
    elif opt.name == "adamw":
        tx = optax.adamw(schedule, b1=opt.get("b1", 0.9), b2=opt.get("b2", 0.999),
                         weight_decay=opt.get("weight_decay", 1e-4))
    elif opt.name == "sgd":
        tx = optax.sgd(schedule, momentum=opt.get("momentum", 0.9), nesterov=True)
    else:
        raise ValueError(f"config.optimizer.name={opt.name!r}; choose one of {OPTIMIZERS}")
    clip = opt.get("grad_clip_norm", None)
    if clip:
        tx = optax.chain(optax.clip_by_global_norm(float(clip)), tx)
    return tx, schedule
