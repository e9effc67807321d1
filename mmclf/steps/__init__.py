"""The steps, in order. Each is a plain function ``step(cfg, run_dir)``: it reads what the
previous step left in ``run_dir`` and writes its own files there; no Hydra, no backend.

``run_step`` is how backends call them: it records each finished step in ``steps.json`` with a
fingerprint of the config, so re-running into the same run dir (after a kill, or a Kubeflow
retry on the same volume) skips the steps already done for that config.
"""
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from mmclf.config import run_fingerprint
from mmclf.io import read_json, write_json_atomic
from mmclf.logs import mmcls_logger
from mmclf.steps.metrics import metrics
from mmclf.steps.prepare_data import prepare_data
from mmclf.steps.test import test
from mmclf.steps.train import train

STEPS = {"prepare_data": prepare_data, "train": train, "test": test, "metrics": metrics}
RECORD = "steps.json"
# prepare_data checks data that lives outside the run dir (and may be gone): it always runs; it
# is idempotent and cheap when the data is there.
ALWAYS_RUN = {"prepare_data"}
log = logging.getLogger(__name__)


def run_step(name: str, cfg: DictConfig, run_dir) -> None:
    """Run step ``name`` unless ``run_dir`` records it as done for this config."""
    mmcls_logger()
    run_dir = Path(run_dir)
    record_path = run_dir / RECORD
    record = read_json(record_path) if record_path.is_file() else {}
    fingerprint = run_fingerprint(cfg)
    if name not in ALWAYS_RUN and cfg.resume != "never" and record.get(name, {}).get("config") == fingerprint:
        log.info("step %s: already done in %s, skipping", name, run_dir)
        return
    started = time.monotonic()
    log.info("step %s: started", name)
    STEPS[name](cfg, run_dir)
    seconds = round(time.monotonic() - started, 1)
    log.info("step %s: done in %.1f s", name, seconds)
    record[name] = {"config": fingerprint, "seconds": seconds, "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_json_atomic(record_path, record)
