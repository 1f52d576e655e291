"""SIGTERM, the usual preemption notice, as a flag that the training loop polls once per step.

The signal handler only sets the flag (no I/O, no JAX in a handler); the loop then saves a
checkpoint at the current step and stops. With several processes started by
``jax.distributed.initialize``, JAX's own preemption service receives SIGTERM instead and
``reached_preemption_sync_point`` names the same step on every process, so that all of them
save that step together.
"""

import signal
import threading

import jax


class PreemptionNotice:
    """``with PreemptionNotice() as preempted: ... if preempted(step): save and stop``."""

    def __init__(self):
        self._flag = False
        self._previous = None
        self._installed = False
        self._synced = False

    def __enter__(self) -> "PreemptionNotice":
        self._synced = jax.process_count() > 1 and bool(jax.config.jax_enable_preemption_service)
        if not self._synced and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum, frame) -> None:
        del signum, frame
        self._flag = True

    def __call__(self, step: int) -> bool:
        """Whether to save and stop at ``step``; call it at every step (all processes)."""
        if self._synced:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self._flag

    def __exit__(self, *exc) -> None:
        if self._installed:
            # getsignal() is None for a handler installed outside Python: restore the default.
            signal.signal(signal.SIGTERM,
                          signal.SIG_DFL if self._previous is None else self._previous)
            self._installed = False
