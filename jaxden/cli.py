"""What ``train.py`` and ``eval.py`` share: flags, multi-host start-up, one-line errors."""

import os
import sys

from absl import flags, logging

from jaxden.data import DataError
from jaxden.train.checkpoint import CheckpointNotFoundError
from jaxden.train.loop import TrainingDiverged, TrainingPreempted

FLAGS = flags.FLAGS
USER_ERRORS = (DataError, CheckpointNotFoundError, TrainingDiverged, ValueError, KeyError,
               OSError)
EXIT_PREEMPTED = 143  # 128 + SIGTERM, what a shell reports for a process that SIGTERM ended


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
    writes; errors still show, except Orbax's own: a failed save or restore is logged there with
    tracebacks from each of its threads, then raised, and jaxden reports it in one line
    (JAXDEN_DEBUG=1 shows them)."""
    logging.set_verbosity(logging.ERROR)
    absl_logger = logging.get_absl_logger()
    if not os.environ.get("JAXDEN_DEBUG") and _not_from_orbax not in absl_logger.filters:
        absl_logger.addFilter(_not_from_orbax)


def _not_from_orbax(record) -> bool:
    return f"{os.sep}orbax{os.sep}" not in record.pathname


_started = False


def start(argv: list[str] | None = None) -> None:
    """Quiet the logs and start JAX's distributed runtime when asked (a no-op for one process).

    Called after absl parsed the flags, or with ``argv`` before that: eval.py reads the run's
    saved config (through Orbax, which starts JAX) to define its --config flag, and
    ``jax.distributed.initialize`` must come before anything starts JAX. Runs once per process.
    Cross-process collectives on CPU use gloo unless JAX_CPU_COLLECTIVES_IMPLEMENTATION says
    otherwise (GPU and TPU use NCCL / ICI and ignore it).
    """
    global _started
    if _started:
        return
    import jax

    quiet_logs()
    if argv is None:
        address, distributed = FLAGS.coordinator_address, FLAGS.distributed
        num_processes, process_id = FLAGS.num_processes, FLAGS.process_id
    else:
        address, distributed = peek_flag(argv, "coordinator_address"), _peek_bool(argv)
        try:
            num_processes, process_id = (None if v is None else int(v) for v in (
                peek_flag(argv, "num_processes"), peek_flag(argv, "process_id")))
        except ValueError:
            return  # absl reports the bad value when it parses the flags
    _started = True
    if not (address or distributed):
        return
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if address:
        jax.distributed.initialize(coordinator_address=address, num_processes=num_processes,
                                   process_id=process_id)
    else:
        jax.distributed.initialize()


def is_chief() -> bool:
    """Whether this is process 0, the one that prints results (every process computes them)."""
    import jax

    return jax.process_index() == 0


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


def _peek_bool(argv: list[str], name: str = "distributed") -> bool:
    """A boolean flag read before absl parses argv (--name, --name=true, --noname)."""
    value = False
    for arg in argv:
        if arg in (f"--{name}", f"--no{name}"):
            value = arg == f"--{name}"
        elif arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1].lower() in ("1", "true", "t", "yes", "y")
    return value


def one_line(error: BaseException) -> str:
    """An exception's message on one line (a repr'd KeyError and a nested traceback unwrapped)."""
    plain = isinstance(error, OSError) and error.strerror  # args[0] is the errno
    message = str(error) if plain or not error.args else str(error.args[0])
    if len(message) > 1 and message[0] == message[-1] == "'":  # a repr'd KeyError message
        message = message[1:-1].replace("\\n", "\n").replace("\\'", "'")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return lines[-1] if "Traceback" in message else " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag or config override (unknown key, wrong type, bad
    variant) reported in one line naming the fix instead of a traceback."""
    from jaxden import flag_errors

    try:
        # A missing config file: now, as ml_collections would report it only on first use.
        flag_errors.check_config_files(FLAGS, {name: peek_flag(argv, name) for name in FLAGS})
        return FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - any failure to parse argv is a bad flag
        exit_bad_flag(e, argv)


def exit_bad_flag(error: Exception, argv: list[str], config=None) -> None:
    """Report a failure to parse ``argv`` in one line and exit with status 1; an override of
    ``config`` (default: the --config flag's) is named with the nearest valid key or its type."""
    if os.environ.get("JAXDEN_DEBUG"):
        raise error
    from jaxden import flag_errors

    if config is None and "config" in FLAGS:
        config = flag_errors.flag_config(FLAGS["config"], peek_flag(argv, "config"))
    message = flag_errors.explain(error, argv, config) or (
        f"bad flag or config override: {one_line(error)} (see the config file for the valid "
        f"keys and values, or --helpfull)")
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


def run_reporting_errors(fn):
    """Run ``fn``; a user error (bad data, config, missing checkpoint or file, divergence) ends
    the process with one line on stderr and exit status 1, a SIGTERM that stopped training
    (after saving a checkpoint) with one line and status 143. JAXDEN_DEBUG=1 shows the
    traceback."""
    try:
        return fn()
    except TrainingPreempted as e:
        print(one_line(e), file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_PREEMPTED)
    except USER_ERRORS as e:
        if os.environ.get("JAXDEN_DEBUG"):
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # Skip interpreter teardown: after a failed restore, Orbax's background event loop
        # would print tracebacks there. Files and checkpoints are closed by now.
        os._exit(1)
