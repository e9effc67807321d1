"""Entry point: ``python -m mmclf [overrides]`` (also the ``mmclf`` console script)."""
from pathlib import Path
from typing import Optional

import hydra
from hydra._internal.hydra import Hydra
from omegaconf import DictConfig

from mmclf import schema  # noqa: F401  (registers the typed schemas before composition)
from mmclf.task import hydra_job, run_job

# The config groups none of whose options sets ``hydra.mode`` (tests/test_config.py checks each one).
GROUPS_WITHOUT_MODE = ("backend", "model", "data", "schedule", "runtime", "logger")


def config_dir() -> str:
    """``conf/`` ships inside the installed package; in a source checkout it sits beside it."""
    installed = Path(__file__).resolve().parent / "conf"
    return str(installed if installed.is_dir() else installed.parent.parent / "conf")


def may_set_mode(override: str) -> bool:
    """Whether a command-line override can bring in a ``hydra.mode`` (a sweep, as hparams_search=optuna
    does): ``hydra.mode`` itself, a choice of a Hydra group, or of a group of conf/ whose options might."""
    key = override.lstrip("+~").partition("=")[0]
    groups = {path.name for path in Path(config_dir()).iterdir() if path.is_dir()}
    return key == "hydra.mode" or key.startswith("hydra/") or (key in groups and key not in GROUPS_WITHOUT_MODE)


def _compose_for_the_mode_only_when_needed() -> None:
    """Hydra composes the whole config once just to read ``hydra.mode``, then again to run. Where no
    override can set it, the mode is the command line's (-m or not), as Hydra decides when the composed
    mode is None: the config is composed once."""
    compose_for_mode = Hydra.get_mode

    def get_mode(self, config_name, overrides):
        if config_name == "config" and not any(map(may_set_mode, overrides)):
            return None
        return compose_for_mode(self, config_name, overrides)

    Hydra.get_mode = get_mode


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> Optional[float]:
    return run_job(cfg, *hydra_job())


_compose_for_the_mode_only_when_needed()

if __name__ == "__main__":
    main()
