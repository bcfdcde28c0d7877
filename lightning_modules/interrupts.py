"""SIGINT / SIGTERM: save a checkpoint at the next consistent point, then stop non-zero.

A scheduler that preempts a job sends SIGTERM and reads the exit status; a user presses
Ctrl-C. Lightning alone exits 0 on SIGTERM (its `SIGTERMException` is a bare `SystemExit`)
and writes no checkpoint on either signal, so up to `eval_every` steps were lost and the
scheduler read success. Here:

- `install()` (called by the run task) makes both signals record themselves in `PENDING`;
- while a `SafeCheckpoint` is training (`PENDING.training`), the signal is only recorded: the
  callback writes a checkpoint at the next point where Lightning can resume exactly (the end
  of the current training step, or the end of the evaluation that follows it) and then
  raises `RunInterrupted`;
- outside training (setup, the step-0 evaluation) or on a second signal, `RunInterrupted` is
  raised at once;
- the run task marks the MLflow run KILLED and exits 128 + signal number (130 for SIGINT,
  143 for SIGTERM), the shell's convention.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass

log = logging.getLogger("suite")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an Exception
    """The run was stopped by a signal (after its checkpoint, when one could be written)."""

    def __init__(self, signum: int, checkpoint: str | None = None):
        self.signum = int(signum)
        self.checkpoint = checkpoint
        name = signal.Signals(self.signum).name
        saved = f"; checkpoint {checkpoint}" if checkpoint else "; no checkpoint written"
        super().__init__(f"stopped by {name}{saved}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@dataclass
class _Pending:
    signum: int | None = None
    training: bool = False  # a SafeCheckpoint will stop the run at a consistent point

    def clear(self) -> None:
        self.signum, self.training = None, False


PENDING = _Pending()


def _handler(signum: int, frame) -> None:  # noqa: ARG001 - signal handler signature
    name = signal.Signals(signum).name
    if PENDING.signum is not None or not PENDING.training:
        PENDING.signum = signum
        raise RunInterrupted(signum)
    PENDING.signum = signum
    log.warning("received %s: saving a checkpoint at the end of this step, then stopping "
                "(send it again to stop at once, without a checkpoint)", name)  # fmt: skip


def install() -> bool:
    """Route SIGINT and SIGTERM to `_handler` (main thread only; False elsewhere)."""
    PENDING.clear()
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in SIGNALS:
        signal.signal(signum, _handler)
    return True


def reclaim() -> None:
    """Put `_handler` back in front (Lightning composes its own SIGTERM handler in fit)."""
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)


def uninstall() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM else signal.default_int_handler)
    PENDING.clear()


def signal_of(error: BaseException) -> int | None:
    """The signal that stopped the run, if one did (also when Lightning re-wrapped it)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, RunInterrupted):
            return seen.signum
        seen = seen.__context__
    return PENDING.signum
