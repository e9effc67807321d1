"""Entry point: ``python -m mmclf [overrides]`` (also the ``mmclf`` console script)."""
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig

from mmclf import schema  # noqa: F401  (registers the typed schemas before composition)
from mmclf.errors import MMClfError
from mmclf.validate import validate

log = logging.getLogger("mmclf")


def config_dir() -> str:
    """``conf/`` ships inside the installed package; in a source checkout it sits beside it."""
    installed = Path(__file__).resolve().parent / "conf"
    return str(installed if installed.is_dir() else installed.parent.parent / "conf")


def run(cfg: DictConfig, run_dir) -> float:
    """Validate, run the configured backend and return the objective ``cfg.optimized_metric``."""
    validate(cfg)
    metrics = instantiate(cfg.backend).run(cfg, Path(run_dir))
    objective = metrics.get(cfg.optimized_metric)
    if not isinstance(objective, (int, float)):
        scalars = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise MMClfError(f"optimized_metric={cfg.optimized_metric!r} is not a scalar metric; use one of {scalars}")
    print(f"{cfg.optimized_metric}: {objective:.2f}  run dir: {run_dir}")
    return float(objective)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return run(cfg, HydraConfig.get().runtime.output_dir)
    except MMClfError as err:
        log.debug("user error", exc_info=True)
        print(f"mmclf: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
