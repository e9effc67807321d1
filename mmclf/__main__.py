"""Entry point: ``python -m mmclf [overrides]`` (also the ``mmclf`` console script)."""
import logging
import sys
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig

from mmclf import jobs, schema, summary  # noqa: F401  (schema registers the typed schemas before composition)
from mmclf.errors import MMClfError
from mmclf.validate import validate

log = logging.getLogger("mmclf")


def config_dir() -> str:
    """``conf/`` ships inside the installed package; in a source checkout it sits beside it."""
    installed = Path(__file__).resolve().parent / "conf"
    return str(installed if installed.is_dir() else installed.parent.parent / "conf")


def scalars(metrics: dict) -> dict:
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}


def run(cfg: DictConfig, run_dir) -> Optional[float]:
    """Validate, run the configured backend and return the objective ``cfg.optimized_metric``.

    None when no run finished here (backend=kfp compiling, or submitting without waiting)."""
    validate(cfg)
    run_dir = Path(run_dir)
    metrics = jobs.finished_metrics(cfg, run_dir)
    if metrics is not None:
        log.info("%s already holds a finished run of this config; not running it again", run_dir)
    else:
        metrics = instantiate(cfg.backend).run(cfg, run_dir)
    if metrics is None:  # compiled, or submitted without waiting: the result comes later, elsewhere
        jobs.write_record(run_dir, cfg, "pending")
        return None
    objective = metrics.get(cfg.optimized_metric)
    if not isinstance(objective, (int, float)):
        raise MMClfError(f"optimized_metric={cfg.optimized_metric!r} is not a scalar metric; "
                         f"use one of {sorted(scalars(metrics))}")
    jobs.write_record(run_dir, cfg, "succeeded", objective=objective, metrics=scalars(metrics))
    print(f"{cfg.optimized_metric}: {objective:.2f}  run dir: {run_dir}")
    return float(objective)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        return run(cfg, run_dir)
    except Exception as err:
        jobs.write_record(run_dir, cfg, "failed", error=f"{type(err).__name__}: {err}")
        if hydra_cfg.mode == RunMode.MULTIRUN:
            if not cfg.sweep.fail_fast:
                log.error("job %s failed and the sweep goes on (sweep.fail_fast=true stops it): %s",
                          hydra_cfg.job.num, err, exc_info=not isinstance(err, MMClfError))
                return float("nan")  # Optuna records a NaN objective as a failed trial
            summary.write_summary(hydra_cfg.sweep.dir)  # Hydra's multirun-end callback will not run
        if isinstance(err, MMClfError):
            print(f"mmclf: error: {err}", file=sys.stderr)
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
