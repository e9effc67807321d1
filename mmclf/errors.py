"""Errors a user can cause and fix: they end the run with one clear line, not a traceback; and a
stop (Ctrl-C, SIGTERM, SIGHUP), which ends it with one line too.

Every entry point (the CLI, a step's process, a Kubeflow pod, a rank, a node, the volume task) ends
the same way: a refusal (the input cannot work; nothing was done) is one line and exit status 2, a
failure (work that started did not finish) one line and exit status 1."""
import contextlib
import signal
import sys
import threading

EXIT_REFUSED, EXIT_FAILED = 2, 1


class MMClfError(Exception):
    """Base for user-facing errors; the message names the key or path and the fix. A refusal."""

    exit_status = EXIT_REFUSED


class StepFailed(MMClfError):
    """Work that started did not finish: a diverged loss, a crashed rank, a TrainJob or KFP run that
    failed, an export that missed parity, a full disk."""

    exit_status = EXIT_FAILED


class ConfigError(MMClfError):
    """A config value is out of range or inconsistent with this machine."""


class RunDirRefused(ConfigError):
    """The run dir belongs to another run or another process: refused before anything in it is touched."""


class DataError(MMClfError):
    """A dataset is missing, corrupt or not in the expected format."""


class StepError(MMClfError):
    """A step cannot run because an earlier step's output is missing."""


class ExportError(StepFailed):
    """The model cannot be exported, or its export does not give PyTorch's results: nothing is exported."""


class ResultNotHere(MMClfError):
    """The job finished elsewhere (on a cluster), but its result could not be brought back.

    Recorded in job.json as ``job_status``, not as a failure: the run's outputs exist where it ran."""

    job_status = "succeeded_without_metrics"


class JobStopped(BaseException):
    """SIGINT (Ctrl-C), SIGTERM (a scheduler, KFP terminating a run) or SIGHUP (a closed terminal)
    stopped the job. A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` between
    here and the signal mistakes it for a failure of that code."""

    job_status = "stopped"

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals():
    """While inside, SIGINT, SIGTERM and SIGHUP raise JobStopped, so the way out runs (child processes
    killed, temp folders removed, the stop recorded), which their default action, death on the spot,
    skips. Only the main thread may set handlers: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise JobStopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_stopped(stop: JobStopped, kept: str = "what finished is kept"):
    """Print the stop as one line on stderr and exit with the status a shell gives a process that
    signal ended (128 + its number)."""
    print(f"mmclf: {stop}; {kept}: run the same command again to resume", file=sys.stderr)
    sys.exit(128 + stop.signum)


def exit_with(err: MMClfError):
    """Print ``err`` as one line on stderr and exit with its status: 2 for a refusal, 1 for a failure."""
    print(f"mmclf: error: {err}", file=sys.stderr)
    sys.exit(err.exit_status)


@contextlib.contextmanager
def one_line_errors(os_errors: bool = False):
    """Turn a user error raised inside into one line and its exit status; with ``os_errors``, an
    OSError too (an unreadable or vanished path), naming its path. Anything else propagates."""
    try:
        yield
    except MMClfError as err:
        exit_with(err)
    except JobStopped as stop:
        exit_stopped(stop)
    except OSError as err:
        if not os_errors:
            raise
        exit_with(MMClfError(f"{err.filename or 'a path in the config'}: {err.strerror or err}; check that path"))
