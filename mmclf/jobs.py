"""One record per job, ``job.json`` in its run dir: what happened, for sweep summaries and re-runs.

A job whose record says ``succeeded`` for the same config is not run again: re-running an
interrupted sweep into the same sweep dir finishes only what is missing.
"""
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from mmclf.config import run_fingerprint
from mmclf.io import read_json, write_json_atomic
from mmclf.schema import plain

JOB_FILE = "job.json"
KFP_RUN_FILE = "kfp_run.json"  # written by backends/kfp_client.py when a job is submitted


def read_record(run_dir) -> dict:
    path = Path(run_dir) / JOB_FILE
    return read_json(path) if path.is_file() else {}


def _identity(cfg: DictConfig) -> dict:
    """What makes two jobs the same job: the config and where it ran (a local result does not
    stand in for a KFP run, nor the other way round)."""
    return {"config": run_fingerprint(cfg), "backend": cfg.backend._target_, "mode": plain(cfg.backend.get("mode"))}


def write_record(run_dir, cfg: DictConfig, status: str, **fields) -> None:
    """Write ``job.json`` afresh: status, the job's identity and ``fields`` (metrics, error...)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / JOB_FILE, {"status": status, **_identity(cfg), **fields})


def finished_metrics(cfg: DictConfig, run_dir) -> Optional[dict]:
    """The metrics of an earlier successful run of this same job in ``run_dir``, if any."""
    record = read_record(run_dir)
    if cfg.resume == "never" or record.get("status") != "succeeded":
        return None
    same_job = all(record.get(key) == value for key, value in _identity(cfg).items())
    return record.get("metrics") if same_job else None
