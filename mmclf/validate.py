"""Checks that need values, not just types: they run before Hydra creates the run dir."""
import os
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from mmclf.errors import ConfigError
from mmclf.fast import uses_device_loader
from mmclf.schema import plain


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


def trains_here(cfg: DictConfig) -> bool:
    """backend=local and kfp's local mode train on this machine; compile and submit do not."""
    return plain(cfg.backend.get("mode")) in (None, "local")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for any value mmclf cannot run with."""
    _positive_int(cfg, "schedule.runner.max_epochs")
    _positive_int(cfg, "data.samples_per_gpu")
    _positive_number("schedule.optimizer.lr", cfg.schedule.optimizer.lr)
    device = plain(cfg.device)
    if device == "cuda" and trains_here(cfg):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA GPU is visible here; use device=auto or device=cpu")
    uses_device_loader(cfg.data)  # data.loader must be mmcls or device
    if cfg.backend.get("mode") is not None:  # backend=kfp: values a cluster would refuse in a pod, later
        from backends.kfp_checks import check_backend

        check_backend(cfg.backend)
    root = Path(cfg.data.root)
    if root.exists() and not root.is_dir():
        raise ConfigError(f"data.root: {root} is a file; point data.root at a folder")


def exit_on_error(check, *args) -> None:
    """Run a check; on ConfigError print one line and exit 2 (no traceback, nothing written)."""
    try:
        check(*args)
    except ConfigError as err:
        print(f"mmclf: error: {err}", file=sys.stderr)
        sys.exit(2)


def check_sweep(config: DictConfig) -> None:
    """A sweeper that searches (Optuna) needs each job's objective back."""
    if "optuna" not in config.hydra.sweeper.get("_target_", "").lower() or trains_here(config):
        return
    if plain(config.backend.mode) != "submit" or not config.backend.wait:
        raise ConfigError("hparams_search needs each trial's objective: use backend=local, backend.mode=local, "
                          "or backend.mode=submit with backend.wait=true")


class ValidateBeforeRun(Callback):
    """Hydra callback: validate the composed config before Hydra creates any output folder."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        exit_on_error(validate, config)
        exit_on_error(check_writable_dir, "hydra.run.dir", config.hydra.run.dir)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        exit_on_error(validate, config)
        exit_on_error(check_sweep, config)
        exit_on_error(check_writable_dir, "hydra.sweep.dir", config.hydra.sweep.dir)
