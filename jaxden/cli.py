"""What ``train.py`` and ``eval.py`` share: flags, multi-host start-up, one-line errors."""

import os
import sys

from absl import flags, logging

from jaxden.data import DataError
from jaxden.train.checkpoint import CheckpointNotFoundError
from jaxden.train.loop import TrainingDiverged

FLAGS = flags.FLAGS
USER_ERRORS = (DataError, CheckpointNotFoundError, TrainingDiverged, ValueError, KeyError)


def define_common_flags() -> None:
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, eval/).",
                        required=True)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() with the cluster environment's values "
                      "(SLURM, Cloud TPU, ...).")


def start() -> None:
    """Quiet the per-file INFO lines that Orbax logs through absl (warnings and errors still
    show), and start JAX's distributed runtime when asked (a no-op for one process)."""
    import jax

    logging.set_verbosity(logging.WARNING)

    if FLAGS.coordinator_address:
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes,
                                   process_id=FLAGS.process_id)
    elif FLAGS.distributed:
        jax.distributed.initialize()


def workdir() -> str:
    return os.path.abspath(os.path.expanduser(FLAGS.workdir))


def peek_flag(argv: list[str], name: str) -> str | None:
    """A flag's value read before absl parses argv (eval.py needs --workdir to define --config)."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def run_reporting_errors(fn):
    """Run ``fn``; a user error (bad data, config, missing checkpoint, divergence) ends the process
    with one line on stderr and exit status 1. Set JAXDEN_DEBUG=1 for the traceback."""
    try:
        return fn()
    except USER_ERRORS as e:
        if os.environ.get("JAXDEN_DEBUG"):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
