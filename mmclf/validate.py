"""Checks that need values, not just types: they run before Hydra creates the run dir.

The core checks its own options, then asks the configured backend to check its own
(``backend.check``); a sweep that needs objectives asks the backend whether it returns them.
"""
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig

from mmclf.errors import ConfigError, one_line_errors
from mmclf.fast import uses_device_loader


def backend_of(cfg: DictConfig):
    """The backend ``cfg.backend._target_`` names (see backends/base.py for the contract)."""
    return get_class(cfg.backend._target_)()


def _positive_int(cfg: DictConfig, key: str) -> None:
    value = cfg
    for part in key.split("."):
        value = value[part]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive integer, e.g. {key}=8")


def _positive_number(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive number, e.g. {key}=0.1")


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_writable_dir(key: str, path) -> None:
    """The folder (or its nearest existing parent) must be a writable directory."""
    existing = _nearest_existing(Path(path).absolute())
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder; choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write under {existing}; choose a writable {key}")


def check_device_here(cfg: DictConfig) -> None:
    """For backends that train on this machine: ``device=cuda`` needs a visible GPU."""
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA GPU is visible here; use device=auto or device=cpu")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for any value mmclf cannot run with."""
    _positive_int(cfg, "schedule.runner.max_epochs")
    _positive_int(cfg, "data.samples_per_gpu")
    _positive_number("schedule.optimizer.lr", cfg.schedule.optimizer.lr)
    uses_device_loader(cfg.data)  # data.loader must be mmcls or device
    root = Path(cfg.data.root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data.root: {root} is a file; point data.root at a folder")
    backend_of(cfg).check(cfg)


def searches(sweeper: DictConfig) -> bool:
    """Whether a Hydra sweeper uses each job's return value: every sweeper but the basic grid one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return not issubclass(get_class(sweeper._target_), BasicSweeper)


def check_sweep(config: DictConfig) -> None:
    """A sweeper that searches (Optuna) needs each job's objective back from the backend."""
    if searches(config.hydra.sweeper) and not backend_of(config).returns_objective(config):
        raise ConfigError("hparams_search needs each trial's objective: use backend=local, backend.mode=local, "
                          "or backend.mode=submit with backend.wait=true")


class ValidateBeforeRun(Callback):
    """Hydra callback: validate the composed config before Hydra creates any output folder.

    Hydra turns an exception raised in a callback into a warning and carries on, so errors end the
    process here (one line, exit 2) instead of being raised."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors():
            validate(config)
            check_writable_dir("hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors():
            validate(config)
            check_sweep(config)
            check_writable_dir("hydra.sweep.dir", config.hydra.sweep.dir)
