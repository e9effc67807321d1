"""A process's life tied to its parent's: torchrun's to mmclf's launcher (mmclf/steps/launch.py), each worker's to
torchrun's (mmclf/steps/__main__.py).

A killed launcher must leave nothing training behind the next command's back. Linux sends a
process a chosen signal when its parent dies once the process asks (``prctl(PR_SET_PDEATHSIG)``),
but the asking comes after the process started: a parent killed in between has already handed
the process to another, and the signal never comes. So a process asks before any heavy import
(a rank: before torch), then checks that its parent is still the one that started it, known by pid: torchrun
writes its own into its workers' environment (``AGENT_PID``, mmclf/steps/torchrun.py), mmclf's launcher
knows torchrun's. Only the standard library here, so that asking comes first.
"""
import ctypes
import os

AGENT_PID = "MMCLF_AGENT_PID"  # torchrun's pid, in the environment it gives its workers
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
try:  # looked up here, not in die_with: die_with also runs between fork and exec
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: torchrun's own teardown is all there is
    _prctl = None


def die_with(parent: int, sig: int) -> None:
    """Get ``sig`` when process ``parent``, this one's parent, dies; exit now if it already has."""
    if _prctl is None:
        return
    _prctl(_PR_SET_PDEATHSIG, sig)
    if os.getppid() != parent:  # the parent died before the signal was asked for
        os._exit(1)
