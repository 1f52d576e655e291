"""jaxden: learned image denoising and joint denoising + classification in JAX/Flax NNX."""

__version__ = "0.1.0"
