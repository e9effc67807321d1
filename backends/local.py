"""Run the steps in order, in this process, in Hydra's run dir."""
from pathlib import Path

from omegaconf import DictConfig

from mmclf.io import read_json
from mmclf.steps import STEPS, run_step
from mmclf.steps.metrics import METRICS


class LocalBackend:
    def run(self, cfg: DictConfig, run_dir: Path) -> dict:
        for name in STEPS:
            run_step(name, cfg, run_dir)
        return read_json(Path(run_dir) / METRICS)
