"""jaxden: learned image denoising and joint denoising + classification in JAX/Flax NNX.

``jaxden.train_and_evaluate(config, workdir)`` is the notebook entry point (from
``jaxden.experiment``, with ``evaluate(workdir)`` beside it); it is imported on first use, so
that ``import jaxden.noise`` stays light. Importing jaxden, unless ``JAXDEN_XLA_CPU_DEFAULTS=0``,
sets one XLA:CPU flag for multi-core convolutions (``jaxden.xla_cpu``) and, where JAX computes
on the CPU, makes its calls synchronous and malloc keep freed memory, so that XLA's temporary
buffers are reused instead of page-faulted in afresh on every call (``jaxden.cpu_memory``).
"""

from jaxden import cpu_memory, xla_cpu

__version__ = "0.1.0"

# Both before JAX starts its CPU backend.
xla_cpu.configure()
cpu_memory.configure()


def __getattr__(name):
    if name == "train_and_evaluate":
        from jaxden.experiment import train_and_evaluate

        return train_and_evaluate
    raise AttributeError(f"module 'jaxden' has no attribute {name!r}")
