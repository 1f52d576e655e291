"""XLA:CPU convolution setting that jaxden applies at import, before JAX starts its backend.

jaxlib 0.10 runs every convolution on CPU through YNNPACK "individual convolution" fusions,
which barely use a second thread: on 2 cores, a 64 x 32 x 32, 64 -> 64 3x3 convolution took
51 ms with 2 threads against 60 ms with 1, its weight gradient 66 against 90 ms; with YNNPACK
convolutions off (XLA's Eigen convolutions) 27 and 45 ms, and 54 and 80 ms on 1 thread.
Whole training steps on 2 threads (``benchmarks/run.py`` shapes, medians of 5): AddUNet
268 -> 190 ms, energy CE 798 -> 619 ms and DSM 1947 -> 1549 ms on the 64 x 32 x 32 x 3
GradResNet; on 1 thread the change is within -6% / +7%, so it is made only where JAX has
more than one core.

Applied only when all hold: ``JAXDEN_XLA_CPU_DEFAULTS`` is not "0"; ``XLA_FLAGS`` does not
already set ``--xla_cpu_experimental_ynn_fusion_type`` (the user's choice wins); the process
may run on more than one core; the installed jaxlib is a version that has the flag (0.10.x:
XLA stops on flags it does not know). It only appends to ``XLA_FLAGS``, so it has no effect
if JAX's CPU backend has already started, and none on GPU or TPU computations.
"""

import os
from importlib.metadata import PackageNotFoundError, version

FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_KNOWN_JAXLIB = ("0.10.",)


def configure(environ=os.environ) -> bool:
    """Append ``FLAG`` to ``environ["XLA_FLAGS"]`` under the conditions of the module
    docstring; returns whether it did."""
    flags = environ.get("XLA_FLAGS", "")
    if environ.get("JAXDEN_XLA_CPU_DEFAULTS", "1") == "0" or FLAG.split("=")[0] in flags:
        return False
    if len(os.sched_getaffinity(0)) < 2:
        return False
    try:
        if not version("jaxlib").startswith(_KNOWN_JAXLIB):
            return False
    except PackageNotFoundError:
        return False
    environ["XLA_FLAGS"] = f"{flags} {FLAG}".strip()
    return True
