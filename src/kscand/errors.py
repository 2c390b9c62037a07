"""The small error hierarchy of kscand; library code raises, only the CLI prints."""

from __future__ import annotations

# The errno names a move_pages(2) failure is injected under (the simulator's
# [sim] move_faults; kscand.testing.faults.FaultyMover around the live mover): the
# whole call fails, or one page does.
MOVE_CALL_FAULTS = ("ESRCH", "EPERM")
MOVE_PAGE_FAULTS = ("EBUSY", "ENOENT", "EFAULT", "ENOMEM", "EACCES", "EIO")


class KscandError(Exception):
    """Base class of every error kscand raises on purpose."""


class ProcessGone(KscandError):
    """The process exited, or its pid now names another process."""


class AccessDenied(KscandError):
    """The kernel refused access (not root, missing capability)."""


class TransientError(AccessDenied):
    """A read of /proc or /sys failed with an errno that is neither an exit nor a
    refusal (EIO, ENOMEM, ...). A subclass of AccessDenied so the engine treats it
    the same way: this process is skipped now and retried after the longest scan
    period (the back-off), never released as if it had exited. `reason` names the
    file and errno, for the counters."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class AccessUnknown(KscandError):
    """The access source has nothing new on these pages since it last reported them
    (DAMON: no snapshot has completed since): not "not accessed", no observation at
    all. Nothing was cleared; the caller leaves the pages' history as it was."""


class Unsupported(KscandError):
    """The kernel lacks a feature kscand needs (page_idle, DAMON, NUMA, ...)."""


class ConfigError(KscandError):
    """A config file, scenario file or tunable value is invalid.

    The message is one line that names the offending field.
    """


class DaemonUnreachable(KscandError):
    """No answer from a daemon: none listens, or it did not answer (exit status 1)."""


class ClusterError(KscandError):
    """A Ray cluster could not be reached, or a run on it failed (its worker died)."""
