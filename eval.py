"""Evaluate the latest checkpoint of a run; the run's saved config is the default config.

    python eval.py --workdir runs/quick [--config.eval.crop=0 --config.eval.sigmas='(15,25,50)']

Writes WORKDIR/eval/results.md, results.json and grid.png, and prints the table.
"""

import sys

from absl import app
from ml_collections import config_flags

from jaxden import cli
from jaxden.experiment import saved_config

cli.define_common_flags()
cli.quiet_logs()
_CONFIG = config_flags.DEFINE_config_dict(
    "config", saved_config(cli.peek_flag(sys.argv, "workdir")),
    "Overrides of the run's saved config, e.g. --config.eval.crop=0.")


def main(argv):
    del argv
    cli.start()
    from jaxden.experiment import evaluate

    config = _CONFIG.value
    print(cli.run_reporting_errors(lambda: evaluate(cli.workdir(), config or None)))


if __name__ == "__main__":
    app.run(main, flags_parser=cli.parse_flags)
