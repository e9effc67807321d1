"""Step 1: make sure the dataset exists under ``data.root`` (shared by runs, outside run dirs)."""
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmclf import data
from mmclf.io import write_text_atomic


def prepare_data(cfg: DictConfig, run_dir) -> None:
    """Prepare the dataset and record the resolved config this run uses as ``config.yaml``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    data.prepare(cfg.data)
