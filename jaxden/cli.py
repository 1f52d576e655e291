"""What ``train.py`` and ``eval.py`` share: flags, multi-host start-up, one-line errors."""

import os
import sys

from absl import flags, logging

from jaxden.data import DataError
from jaxden.train.checkpoint import CheckpointNotFoundError
from jaxden.train.loop import TrainingDiverged

FLAGS = flags.FLAGS
USER_ERRORS = (DataError, CheckpointNotFoundError, TrainingDiverged, ValueError, KeyError,
               OSError)


def define_common_flags() -> None:
    flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics.jsonl, eval/).",
                        required=True)
    flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
    flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
    flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
    flags.DEFINE_bool("distributed", False,
                      "Call jax.distributed.initialize() with the cluster environment's values "
                      "(SLURM, Cloud TPU, ...).")


def quiet_logs() -> None:
    """Hide the INFO and WARNING lines that Orbax logs through absl for every file it reads or
    writes; errors still show."""
    logging.set_verbosity(logging.ERROR)


def start() -> None:
    """Quiet the logs and start JAX's distributed runtime when asked (a no-op for one process)."""
    import jax

    quiet_logs()

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


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a repr'd KeyError and a nested traceback unwrapped)."""
    message = str(error.args[0] if error.args else error)
    if len(message) > 1 and message[0] == message[-1] == "'":  # a repr'd KeyError message
        message = message[1:-1].replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if "Traceback" in message else " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override (unknown key, wrong type, bad
    variant) reported in one line naming the fix instead of a traceback."""
    try:
        return FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - any failure to parse argv is a bad flag
        if os.environ.get("JAXDEN_DEBUG"):
            raise
        print(f"error: bad flag or config override: {one_line(e)} (see the config file for the "
              f"valid keys and values, or --helpfull)", file=sys.stderr)
        sys.exit(1)


def run_reporting_errors(fn):
    """Run ``fn``; a user error (bad data, config, missing checkpoint or file, divergence) ends
    the process with one line on stderr and exit status 1. JAXDEN_DEBUG=1 shows the traceback."""
    try:
        return fn()
    except USER_ERRORS as e:
        if os.environ.get("JAXDEN_DEBUG"):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip interpreter teardown: after a failed restore, Orbax's background event loop
        # would print tracebacks there. Files and checkpoints are closed by now.
        os._exit(1)
