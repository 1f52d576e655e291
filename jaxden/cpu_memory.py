"""XLA:CPU host memory reuse that jaxden applies at import, before JAX starts its backend.

XLA:CPU allocates one contiguous temporary buffer per call of a compiled function (e.g.
123 MB for the ``benchmarks/run.py`` AddUNet train step) and frees it at the end. glibc's
malloc serves a request that large with a fresh ``mmap`` and returns it to the system on
``free``, so the next call page-faults all of it in again, zero-filled by the kernel: 31,400
minor faults and 59-69 ms of system time per 190 ms AddUNet step on 2 cores, 27,500 per DSM
step, 9,200 per energy CE step. With JAX's asynchronous CPU dispatch the call runs on a worker
thread, whose malloc arena is capped at 64 MB, so tuning malloc alone cannot keep such a
buffer; run on the calling thread, it comes from the main heap, which can.

So, where JAX will compute on the CPU, jaxden
- turns off JAX's asynchronous CPU dispatch (``jax_cpu_enable_async_dispatch``: a CPU call
  returns when its result is ready), and
- tells glibc's malloc to take large blocks from the heap rather than ``mmap``
  (``M_MMAP_MAX = 0``) and to keep freed heap memory instead of trimming it
  (``M_TRIM_THRESHOLD`` = 2 GiB), so the next call reuses the same, already mapped pages.

Measured (``benchmarks/run.py`` steps, one device, 2 cores, medians of 15; peak resident
memory in parentheses): AddUNet 188 -> 149-152 ms (661 -> 662-664 MB), DSM 85-101 -> 55 ms
(964-1013 -> 998 MB), energy CE 35-44 -> 25 ms (712-770 -> 772-776 MB), issue 9's CE network
(``--sizes cifar``) 620-648 -> 507 ms (1159 -> 1151 MB), with 0-200 faults per step left.
Either change alone gains nothing (AddUNet 184 and 195 ms). The cost: Python no longer runs
ahead of the CPU computation, and the process keeps freed memory (up to 2 GiB of it) for
reuse instead of returning it to the system.

Applied only when all hold: ``JAXDEN_XLA_CPU_DEFAULTS`` is not "0"; the environment does not
set ``JAX_CPU_ENABLE_ASYNC_DISPATCH`` (the user's choice wins); JAX's platform is the CPU
(``JAX_PLATFORMS`` / ``jax_platforms`` starts with ``cpu``, or is unset with no GPU or TPU
plugin installed); the C library is glibc. On several CPU devices each device's share still
runs on a worker thread, and its buffer is kept where it fits that thread's 64 MB arena: with
2 devices the AddUNet step went from 30,200 to 340 faults, 173.6 to 136.3 ms, and its peak
memory from 640 to 771 MB.
"""

import ctypes
import importlib.util
import os
import pkgutil

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GiB of freed heap kept at most
ASYNC_ENV = "JAX_CPU_ENABLE_ASYNC_DISPATCH"


def accelerator_plugins() -> list[str]:
    """Names of the installed JAX GPU/TPU plugins, found without importing them."""
    spec = importlib.util.find_spec("jax_plugins")
    folders = (spec.submodule_search_locations or []) if spec else []
    names = [module.name for module in pkgutil.iter_modules(folders)]
    return names + [name for name in ("libtpu",) if importlib.util.find_spec(name)]


def runs_on_cpu(platforms: str, plugins: list[str]) -> bool:
    """Whether JAX's default platform will be the CPU, decided before JAX starts: from
    ``platforms`` (``JAX_PLATFORMS`` or ``jax_platforms``, e.g. "cpu" or "cuda,cpu"; empty:
    JAX takes the best one installed) and the installed accelerator ``plugins``."""
    if platforms:
        return platforms.split(",")[0].strip() == "cpu"
    return not plugins


def _glibc():
    libc = ctypes.CDLL(None)  # the process's own C library
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def configure(environ=os.environ) -> bool:
    """Apply the settings of the module docstring where its conditions hold; returns whether
    it did."""
    if environ.get("JAXDEN_XLA_CPU_DEFAULTS", "1") == "0" or ASYNC_ENV in environ:
        return False
    import jax

    platforms = environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or ""
    if not runs_on_cpu(platforms, accelerator_plugins()):
        return False
    libc = _glibc()
    if libc is None:
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    libc.mallopt(M_MMAP_MAX, 0)
    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return True
