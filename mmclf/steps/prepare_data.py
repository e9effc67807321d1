"""Step 1: make sure the dataset exists under ``data.root`` (shared by runs, outside run dirs)."""
from omegaconf import DictConfig, OmegaConf

from mmclf import data
from mmclf.io import write_text_atomic
from mmclf.rundir import RunDir


def prepare_data(cfg: DictConfig, run_dir: RunDir) -> None:
    """Prepare the dataset, then record the resolved config this run uses as ``config.yaml``
    (after: data the run cannot use leaves the run dir as it was)."""
    data.prepare(cfg.data)
    run_dir.path.mkdir(parents=True, exist_ok=True)
    write_text_atomic(run_dir.config, OmegaConf.to_yaml(cfg, resolve=True))
