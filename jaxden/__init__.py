"""jaxden: learned image denoising and joint denoising + classification in JAX/Flax NNX.

``jaxden.train_and_evaluate(config, workdir)`` is the notebook entry point (from
``jaxden.experiment``, with ``evaluate(workdir)`` beside it); it is imported on first use, so
that ``import jaxden.noise`` stays light. Importing jaxden sets one XLA:CPU flag for multi-core
convolutions unless ``JAXDEN_XLA_CPU_DEFAULTS=0`` (``jaxden.xla_cpu``).
"""

from jaxden import xla_cpu

__version__ = "0.1.0"

xla_cpu.configure()  # before JAX starts its CPU backend (see jaxden.xla_cpu)


def __getattr__(name):
    if name == "train_and_evaluate":
        from jaxden.experiment import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(f"module 'jaxden' has no attribute {name!r}")
