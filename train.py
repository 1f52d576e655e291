"""Train a jaxden method.

    python train.py --config configs/addunet_denoise.py:quick --workdir runs/quick \
        [--config.optimizer.learning_rate=1e-3 ...]

Multi-host: pass --coordinator_address/--num_processes/--process_id, or --distributed to let
``jax.distributed.initialize()`` read them from the cluster environment.
"""

from absl import app, flags
from ml_collections import config_flags

from jaxden import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py[:variant]).",
                                lock_config=True)
cli.define_common_flags()


def main(argv):
    del argv
    cli.start()
    from jaxden.experiment import train_and_evaluate

    cli.run_reporting_errors(lambda: train_and_evaluate(_CONFIG.value, cli.workdir()))


if __name__ == "__main__":
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=cli.parse_flags)
