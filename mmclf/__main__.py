"""Entry point: ``python -m mmclf [overrides]`` (also the ``mmclf`` console script)."""
from pathlib import Path
from typing import Optional

import hydra
from omegaconf import DictConfig

from mmclf import schema  # noqa: F401  (registers the typed schemas before composition)
from mmclf.task import hydra_job, run_job


def config_dir() -> str:
    """``conf/`` ships inside the installed package; in a source checkout it sits beside it."""
    installed = Path(__file__).resolve().parent / "conf"
    return str(installed if installed.is_dir() else installed.parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    return run_job(cfg, *hydra_job())


if __name__ == "__main__":
    main()
