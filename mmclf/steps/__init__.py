"""The step table: prepare-data -> train -> test -> export -> metrics, and ``run_step``, the one way
every process runs a step.

Each step is a plain function ``step(cfg, run_dir)`` in its own module: it reads what the previous
step left in the run dir and writes its own files there; no Hydra, no backend. The table says what
each step needs, so both backends, the Kubeflow components and their resource requests derive from
it. Functions are imported when a step runs, not when the table is read: compiling a pipeline needs
the table, not torch.

``run_step`` records each finished step in ``steps.json`` with a fingerprint of the config, so
re-running into the same run dir (after a kill, or a Kubeflow retry on the same volume) skips the
steps already done for that config. backend=local and a Kubeflow pod call it in process; a process
of its own (a Kubeflow Trainer node, a torchrun rank) runs ``python -m mmclf.steps NAME --run-dir DIR``
(__main__.py). The train step runs on several processes through torchrun (launch.py starts it,
torchrun.py is the command it runs, lifeline.py ties each rank to it).

Above mmclf.training, mmclf.deploy and everything beneath them; below only the task and its checks.
"""
import importlib
import logging
import time
from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig

from mmclf.models.config import run_fingerprint
from mmclf.run.io import read_json, read_record, write_json_atomic
from mmclf.run.logs import mmcls_logger
from mmclf.run.rundir import RunDir
from mmclf.training.world import is_rank_zero, world_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Step:
    name: str  # the function's name and its module's, in mmclf.steps
    accelerated: bool  # trains or evaluates the model: runs on the accelerator, gets backend resources
    reads: tuple[str, ...]  # run-dir files (RunDir names) it needs from earlier steps
    writes: tuple[str, ...]  # run-dir files it leaves for later steps and for people
    always_run: bool = False  # checks things outside the run dir, so a record of it proves nothing
    # Its module's outputs_intact(cfg, run_dir) is asked before a recorded run is trusted.
    checks_outputs: bool = False
    distributed: bool = False  # runs on world.world_size(cfg) processes (torchrun), recorded in steps.json
    imports_mmcv: bool = False  # importing mmcv mutes the console's log handlers: ``module`` restores them

    @property
    def module(self):
        module = importlib.import_module(f"mmclf.steps.{self.name}")
        if self.imports_mmcv:
            mmcls_logger()
        return module

    @property
    def function(self) -> Callable[[DictConfig, RunDir], None]:
        return getattr(self.module, self.name)

    def done(self, cfg: DictConfig, run_dir: RunDir, record: dict, fingerprint: str) -> bool:
        """Whether ``record`` (steps.json) shows this step finished for ``cfg`` (``fingerprint``: its
        ``run_fingerprint``), its outputs intact."""
        if self.always_run or cfg.resume == "never" or not recorded(self.name, fingerprint, record):
            return False
        return not self.checks_outputs or self.module.outputs_intact(cfg, run_dir)


def recorded(name: str, fingerprint: str, record: dict) -> bool:
    """Whether ``record`` (steps.json) says step ``name`` finished for the config whose ``run_fingerprint``
    is ``fingerprint`` (computed once by the caller: it resolves and dumps the whole config)."""
    return record.get(name, {}).get("config") == fingerprint


STEPS = (
    # prepare_data checks data that lives outside the run dir (and may be gone); it is idempotent
    # and cheap when the data is there.
    Step("prepare_data", accelerated=False, reads=(), writes=(RunDir.CONFIG, RunDir.DATA_MANIFEST), always_run=True),
    Step("train", accelerated=True, reads=(RunDir.CONFIG,), writes=(RunDir.WORK_DIR,), checks_outputs=True,
         distributed=True, imports_mmcv=True),
    Step("test", accelerated=True, reads=(RunDir.WORK_DIR,),
         writes=(RunDir.EVAL_RESULT, RunDir.VAL_RESULT, RunDir.PREDICTIONS, RunDir.MISCLASSIFIED), imports_mmcv=True),
    # export measures ONNX against PyTorch's CPU scores: no accelerator, which would only change the reference.
    Step("export", accelerated=False, reads=(RunDir.WORK_DIR,),
         writes=(RunDir.ONNX_MODEL, RunDir.LABELS, RunDir.SMOKE_TEST, RunDir.EXPORT_RESULT), imports_mmcv=True),
    Step("metrics", accelerated=False, reads=(RunDir.WORK_DIR, RunDir.EVAL_RESULT, RunDir.VAL_RESULT,
                                              RunDir.PREDICTIONS, RunDir.EXPORT_RESULT),
         writes=(RunDir.REPORT, RunDir.CONFUSION_MATRIX, RunDir.TRAINING_CURVE, RunDir.METRICS)),
)
STEP_NAMES = tuple(step.name for step in STEPS)


def step_named(name: str) -> Step:
    for step in STEPS:
        if step.name == name:
            return step
    raise KeyError(f"no step {name!r}; the steps are {', '.join(STEP_NAMES)}")


def run_step(name: str, cfg: DictConfig, run_dir, fingerprint: str | None = None) -> None:
    """Run step ``name`` unless ``run_dir`` records it as done for this config; record it when done.
    ``fingerprint``: ``run_fingerprint(cfg)``, where the caller runs several steps of one config."""
    step, run_dir = step_named(name), RunDir(run_dir)
    fingerprint = fingerprint or run_fingerprint(cfg)
    function = step.function  # imported first: importing mmcv mutes the console, Step.module undoes it
    if step.done(cfg, run_dir, read_record(run_dir.steps_record), fingerprint):
        log.info("step %s: already done in %s, skipping", name, run_dir)
        return
    started = time.monotonic()
    log.info("step %s: started", name)
    function(cfg, run_dir)
    seconds = round(time.monotonic() - started, 1)
    log.info("step %s: done in %.1f s", name, seconds)
    record_step(name, cfg, run_dir, seconds, fingerprint)


def record_step(name: str, cfg: DictConfig, run_dir: RunDir, seconds: float, fingerprint: str) -> None:
    """Record in steps.json that step ``name`` finished for ``cfg`` (``fingerprint``: its ``run_fingerprint``,
    as ``recorded`` compares it). What later steps made from this
    step's earlier outputs is out of date: their records go. On several nodes only node 0 writes."""
    step, record = step_named(name), read_record(run_dir.steps_record)
    if not step.always_run:
        for later in STEP_NAMES[STEP_NAMES.index(name) + 1:]:
            record.pop(later, None)
    record[name] = {"config": fingerprint, "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if step.distributed:
        record[name]["world_size"] = world_size(cfg)
    if is_rank_zero():
        write_json_atomic(run_dir.steps_record, record)


def entry_point(name: str, run_dir) -> list[str]:
    """What follows ``python`` to run step ``name`` in ``run_dir`` in a process of its own (__main__.py)."""
    return ["-m", __name__, name, "--run-dir", str(run_dir)]


def run_all(cfg: DictConfig, run_dir) -> dict:
    """Every step in order in this process; the run's metrics.json."""
    fingerprint = run_fingerprint(cfg)
    for step in STEPS:
        run_step(step.name, cfg, run_dir, fingerprint)
    return read_json(RunDir(run_dir).metrics)
