"""A job: what Hydra says about it (``JobContext``) and what it left, ``job.json`` in its run dir.

A job whose record says ``succeeded`` for the same config is not run again (mmclf/task.py, which also
asks the steps whether their outputs are intact): re-running an interrupted sweep into the same sweep
dir finishes only what is missing.
"""
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import MMClfError
from mmclf.models.config import run_fingerprint
from mmclf.run.io import read_record as read_json_record
from mmclf.run.io import write_json_atomic
from mmclf.run.rundir import RunDir


@dataclass(frozen=True)
class JobContext:
    """Hydra's word on one job, handed to the backend: its command-line overrides and, in a
    multirun, its number and the sweep dir. The default is a single run outside Hydra (tests)."""

    overrides: tuple[str, ...] = ()
    number: Optional[int] = None  # None: not part of a sweep
    sweep_dir: Optional[Path] = None
    parallel: bool = False  # run beside the sweep's other jobs (a launcher other than Hydra's basic one)

    @property
    def in_sweep(self) -> bool:
        return self.number is not None

    @property
    def experiment(self) -> str:
        """A name for the experiment this job belongs to: ``mmclf``, or for a sweep's jobs
        ``mmclf-<the sweep dir's last two parts>`` (its date and time), shared by all of them."""
        if not self.in_sweep:
            return "mmclf"
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(["mmclf", *self.sweep_dir.parts[-2:]]))


def parallel_launcher(launcher: DictConfig) -> bool:
    """Whether a Hydra launcher runs a sweep's jobs side by side: every launcher but the basic one."""
    from hydra._internal.core_plugins.basic_launcher import BasicLauncher
    from hydra.utils import get_class

    return not issubclass(get_class(launcher._target_), BasicLauncher)


def read_record(run_dir) -> dict:
    return read_json_record(RunDir(run_dir).job_record)


def sweep_job_record(job_dir) -> dict:
    """A sweep job's record, if it is of the config Hydra last ran in ``job_dir`` (``.hydra/config.yaml``).

    A job refused there (its dir holds another config's run) writes no record, so the record
    found is the earlier run's: reported as refused instead of lending that run's result."""
    record = read_record(job_dir)
    hydra_config = Path(job_dir) / ".hydra" / "config.yaml"
    if record and hydra_config.is_file() and record.get("config") != run_fingerprint(OmegaConf.load(hydra_config)):
        return {"status": "refused", "error": "the job dir holds the run of another config, left as it was"}
    return record


def _identity(cfg: DictConfig) -> dict:
    """What makes two jobs the same job: the config and where it ran (a local result does not
    stand in for a KFP run, nor the other way round)."""
    return {"config": run_fingerprint(cfg), "backend": cfg.backend._target_, "mode": cfg.backend.get("mode")}


def write_record(run_dir, cfg: DictConfig, status: str, remote: Optional[dict] = None, **fields) -> None:
    """Write ``job.json`` afresh: status, the job's identity, where it runs elsewhere (``remote``,
    from the backend) and ``fields`` (metrics, error...)."""
    run_dir = RunDir(run_dir)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    where = {"remote": remote} if remote else {}
    write_json_atomic(run_dir.job_record, {"status": status, **_identity(cfg), **where, **fields})


def same_job(cfg: DictConfig, record: dict) -> bool:
    """Whether job.json's ``record`` is of this job: the same config, run the same way."""
    return all(record.get(key) == value for key, value in _identity(cfg).items())


# The export step's parity figures (export.json), which metrics.json repeats: the share of test images
# whose top-1 class ONNX and PyTorch agree on (%), the difference of their test top-1 accuracies (points)
# and the largest difference of a softmax score.
ONNX_METRICS = ("onnx_top1_agreement", "onnx_top1_accuracy_diff", "onnx_max_abs_score_diff")


def scalar_metric_names(num_classes: Optional[int], onnx: bool = False) -> list[str]:
    """The scalars of metrics.json: mmcls's evaluate() (top-1 and top-min(5, classes); both when the
    class count comes from the data) on the validation split (``val_``) and the test split (``test_``),
    and the test-set size: what ``optimized_metric`` may name; with ``onnx`` (runtime.export.onnx),
    the export's parity figures after them."""
    top_k = sorted({1, 5} if num_classes is None else {1, min(5, num_classes)})
    names = [*(f"accuracy_top-{k}" for k in top_k), "precision", "recall", "f1_score"]
    return ([f"{split}_{name}" for split in ("val", "test") for name in names] + ["num_test_images"] +
            list(ONNX_METRICS if onnx else ()))


def scalars(metrics: dict) -> dict:
    """The numbers of a metrics dict (metrics.json without per-class accuracy and confusion matrix)."""
    return {key: value for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def shown(value) -> str:
    """A scalar as the reports print it: two decimals, or three significant digits for a small one
    (a score difference of 3e-08 is not 0.00)."""
    if isinstance(value, float) and 0 < abs(value) < 0.01:
        return f"{value:.2e}"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def objective(cfg: DictConfig, metrics: dict) -> float:
    """``metrics[cfg.optimized_metric]``, the value returned to Hydra's sweeper."""
    value = metrics.get(cfg.optimized_metric)
    if not isinstance(value, (int, float)):
        raise MMClfError(f"optimized_metric={cfg.optimized_metric!r} is not a scalar metric; "
                         f"use one of {sorted(scalars(metrics))}")
    return float(value)
