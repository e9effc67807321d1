"""Run the steps in order, in this process, in Hydra's run dir."""
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from mmclf.io import read_json
from mmclf.steps import STEPS
from mmclf.steps.metrics import METRICS

log = logging.getLogger(__name__)


class LocalBackend:
    def run(self, cfg: DictConfig, run_dir: Path) -> dict:
        for name, step in STEPS.items():
            started = time.monotonic()
            log.info("step %s: started", name)
            step(cfg, run_dir)
            log.info("step %s: done in %.1f s", name, time.monotonic() - started)
        return read_json(Path(run_dir) / METRICS)
