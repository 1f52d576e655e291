"""Evaluate the latest checkpoint of a run; the run's saved config is the default config.

    python eval.py --workdir runs/quick [--config.eval.crop=0 --config.eval.sigmas='(15,25,50)']
    python eval.py --workdir runs/cdn/joint --robustness configs/robustness.py:quick

Writes WORKDIR/eval/results.md, results.json and grid.png, and prints the table. With
--robustness: robust accuracy under adversarial attacks instead (``jaxden.robustness``), in
WORKDIR/eval/robustness/.
"""

import sys

from absl import app
from ml_collections import config_flags

from jaxden import cli
from jaxden.experiment import load_config, saved_config

cli.define_common_flags()
cli.start(sys.argv)  # multi-host: before the saved config is read (reading it starts JAX)
_WORKDIR = cli.peek_flag(sys.argv, "workdir")
_SAVED = cli.run_reporting_errors(lambda: saved_config(_WORKDIR))
try:  # ml_collections applies the --config.* overrides here, at definition
    _CONFIG = config_flags.DEFINE_config_dict(
        "config", _SAVED, "Overrides of the run's saved config, e.g. --config.eval.crop=0.")
except Exception as e:  # noqa: BLE001 - an unknown key or a bad value: one line, no traceback
    if _WORKDIR and not _SAVED:  # nothing to override: say that the run has no checkpoint
        cli.run_reporting_errors(lambda: load_config(_WORKDIR))
    cli.exit_bad_flag(e, sys.argv, _SAVED or None)
_ROBUSTNESS = config_flags.DEFINE_config_file(
    "robustness", None, "A robustness config (configs/robustness.py:VARIANT): evaluate robust "
    "accuracy under attacks instead; override with --robustness.steps=50.")


def main(argv):
    del argv
    cli.start()
    from jaxden.experiment import evaluate

    config = _CONFIG.value
    if _ROBUSTNESS.value is not None:
        from jaxden.robustness import evaluate_robustness

        markdown = cli.run_reporting_errors(
            lambda: evaluate_robustness(cli.workdir(), _ROBUSTNESS.value))
    else:
        markdown = cli.run_reporting_errors(lambda: evaluate(cli.workdir(), config or None))
    if cli.is_chief():  # every process evaluates; process 0 writes and prints
        print(markdown)


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
