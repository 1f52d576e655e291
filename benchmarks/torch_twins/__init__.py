"""PyTorch twins of jaxden's models and maths, for side-by-side comparison only.

Each mirrors a jaxden module operation by operation (same padding, strides, norms, epsilons,
activations, initial gate values, iteration) so that the same weights give the same numbers:
``tests/test_port.py`` checks it, ``benchmarks/run.py`` times both. Attribute names follow
the NNX modules' so that ``jaxden.port`` maps parameters one to one. Images are NCHW here
(PyTorch's layout), NHWC in jaxden. Not part of the jaxden package: jaxden never imports
torch.

- ``addunet.AddUNet``: ``jaxden.models.AddUNet`` (every skip mode and gate option).
- ``energy.GradResNet``: ``jaxden.models.GradResNet``.
- ``dlwnet.DLWNet``: ``jaxden.models.DLWNet`` (the 2-D weight net).
- ``tweedie``: ``jaxden.tweedie`` (classify, score, denoise) by ``torch.autograd.grad``.
- ``cdn``: ``jaxden.methods.cdn``'s log-joint read-out and loss (CE + DSM).
- ``tv``: ``jaxden.solvers.tv``'s Chambolle-Pock iteration; autograd through it is the
  unrolled hypergradient.
"""
