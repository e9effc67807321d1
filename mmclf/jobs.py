"""One record per job, ``job.json`` in its run dir: what happened, for sweep summaries and re-runs.

A job whose record says ``succeeded`` for the same config is not run again: re-running an
interrupted sweep into the same sweep dir finishes only what is missing.
"""
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from mmclf.config import run_fingerprint
from mmclf.io import read_json, write_json_atomic

JOB_FILE = "job.json"


def read_record(run_dir) -> dict:
    path = Path(run_dir) / JOB_FILE
    return read_json(path) if path.is_file() else {}


def write_record(run_dir, cfg: DictConfig, status: str, **fields) -> None:
    """Update ``job.json``: status, config fingerprint and any fields (metrics, error, KFP run id...)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {**read_record(run_dir), "status": status, "config": run_fingerprint(cfg), **fields}
    write_json_atomic(run_dir / JOB_FILE, record)


def finished_metrics(cfg: DictConfig, run_dir) -> Optional[dict]:
    """The metrics of an earlier successful run of this same config in ``run_dir``, if any."""
    record = read_record(run_dir)
    if cfg.resume == "never" or record.get("status") != "succeeded":
        return None
    return record.get("metrics") if record.get("config") == run_fingerprint(cfg) else None
