"""Checks that need values, not just types: they run before Hydra creates the run dir.

The core checks its own options, then asks the configured backend to check its own
(``backend.check``); a sweep that needs objectives asks the backend whether it returns them.
"""
import os
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mmclf.data import views
from mmclf.errors import ConfigError, one_line_errors
from mmclf.reports import mlflow_model, tracking
from mmclf.reports.jobs import parallel_launcher, scalar_metric_names
from mmclf.run.sweep_gpus import check_parallel_jobs
from mmclf.rundir_checks import check_run_dir
from mmclf.training import world
from mmclf.training.fast import uses_device_loader

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit


def backend_of(cfg: DictConfig):
    """The backend ``cfg.backend._target_`` names (see backends/base.py for the contract)."""
    return get_class(cfg.backend._target_)()


def _integer(cfg: DictConfig, key: str, low: int, example: str, high: int = None) -> None:
    """``cfg.<key>`` (when present) must be an integer in [low, high]."""
    value = cfg
    for part in key.split("."):
        if part not in value:
            return
        value = value[part]
    in_range = not isinstance(value, bool) and isinstance(value, int) and value >= low
    if not in_range or (high is not None and value > high):
        bound = "a positive integer" if low == 1 else f"an integer from {low}" + (f" to {high}" if high else " up")
        raise ConfigError(f"{key}={value!r}: must be {bound}, e.g. {key}={example}")


def _positive_number(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigError(f"{key}={value!r}: must be a positive number, e.g. {key}=0.1")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long to look up
        return False


def _nearest_existing(path: Path) -> Path:
    while not _exists(path) and path != path.parent:
        path = path.parent
    return path


def check_path(key: str, path) -> None:
    """A usable path: not empty, UTF-8, no part longer than the filesystem allows."""
    if not str(path).strip():
        raise ConfigError(f"{key} is empty; give a folder, e.g. {key}=data")
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes the shell passed that are not UTF-8: every record mmclf writes is
        raise ConfigError(f"{key}={ascii(str(path))}: the path is not valid UTF-8, which run records (JSON, YAML) "
                          f"cannot hold; rename the folder, or link it from a UTF-8 name and give that") from None
    existing = _nearest_existing(Path(path).absolute())
    longest = os.pathconf(existing if existing.is_dir() else existing.parent, "PC_NAME_MAX")
    for part in Path(path).parts:
        if len(os.fsencode(part)) > longest:
            raise ConfigError(f"{key}: the name {part[:40]}... is {len(os.fsencode(part))} bytes long; this filesystem "
                              f"allows {longest}: choose a shorter {key}")


def check_writable_dir(key: str, path) -> None:
    """The folder (or its nearest existing parent) must be a writable directory."""
    check_path(key, path)
    existing = _nearest_existing(Path(path).absolute())
    if not existing.is_dir():
        raise ConfigError(f"{key}: {existing} is a file, not a folder; choose another {key}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: cannot write under {existing}; choose a writable {key}")


def check_runs_here(cfg: DictConfig) -> None:
    """For backends that train on this machine: ``device=cuda`` needs a visible GPU (one per process),
    ``dist.nnodes`` one node, ``model.pretrained=<path>`` a file here, and ``resume=<path>`` a checkpoint
    here of the same recipe."""
    if cfg.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA GPU is visible here; use device=auto or device=cpu")
    if cfg.dist.nnodes > 1:
        raise ConfigError(f"dist.nnodes={cfg.dist.nnodes}: this runs on this one machine; several nodes run as a "
                          "Kubeflow TrainJob (backend=kfp backend.mode=submit backend.distributed=trainjob), or set "
                          "dist.nnodes=1")
    world.check_fits_here(cfg)
    source = cfg.model.get("pretrained")
    if source and source != "zoo" and "://" not in source and not Path(source).expanduser().is_file():
        raise ConfigError(f"model.pretrained={source}: no such checkpoint file here; give a path, a URL or "
                          "model.pretrained=zoo")
    _check_load_from(cfg.runtime.get("load_from"))
    if cfg.logger.get("mlflow") is not None:
        tracking.check_store(cfg.logger.mlflow)
    mlflow_model.check_registration(cfg)
    if cfg.resume not in ("auto", "never"):
        from mmclf.models.config import weights_fingerprint
        from mmclf.training.checkpoints import resume_checkpoint  # torch: only for a named checkpoint

        resume_checkpoint(cfg.resume, Path(), weights_fingerprint(cfg), cfg.schedule.runner.max_epochs,
                          world.world_size(cfg))


def _check_load_from(path) -> None:
    """``runtime.load_from`` (weights to start from, mmcv's key) is a checkpoint here holding tensors
    only: loaded once, as training would, with weights_only (a pickle that would run code is refused)."""
    if path is None:
        return
    if "://" in str(path):
        return  # mmcv fetches URLs itself when training starts
    if not Path(path).expanduser().is_file():
        raise ConfigError(f"runtime.load_from={path}: no such checkpoint file here; give the path of a .pth file")
    import torch

    try:
        torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as err:  # not a checkpoint, damaged, or a pickle that would run code
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ConfigError(f"runtime.load_from={path}: not a loadable checkpoint of tensors ({reason}); give a .pth "
                          "file saved by torch.save or mmcv") from None


def _check_data(cfg: DictConfig) -> None:
    check_path("data.root", cfg.data.root)
    if cfg.data.get("cache_dir") is not None:
        check_path("data.cache_dir", cfg.data.cache_dir)
    root = Path(cfg.data.root)
    if _exists(root) and not root.is_dir():
        raise ConfigError(f"data.root: {root} is a file; point data.root at a folder")
    if cfg.data.get("num_classes") is None and cfg.data.get("name") != "folder":
        raise ConfigError("data.num_classes is null: only data=folder finds its classes in the data; set "
                          "data.num_classes, e.g. data.num_classes=10")
    for key, low, example in [("image_size", 1, "32"), ("num_train", 1, "500"),
                              ("num_test", 1, "100"), ("samples_per_gpu", 1, "64"), ("workers_per_gpu", 0, "2")]:
        _integer(cfg, f"data.{key}", low, example)
    if cfg.data.get("num_classes") is not None:
        _integer(cfg, "data.num_classes", 1, "10")
    if "val_fraction" in cfg.data and not (isinstance(cfg.data.val_fraction, (int, float)) and
                                           0 <= cfg.data.val_fraction < 1):
        raise ConfigError(f"data.val_fraction={cfg.data.val_fraction!r}: must be a number in [0, 1), e.g. "
                          "data.val_fraction=0.1 (0: validate on the test split, for reference runs only)")
    if cfg.data.get("name") == "folder":
        views.check_cache_size(cfg.data)
    uses_device_loader(cfg.data)  # data.loader must be mmcls or device


def _check_objective(cfg: DictConfig) -> None:
    """``optimized_metric`` names a validation figure of metrics.json: sweeps never choose on the test split."""
    metrics = [name for name in scalar_metric_names(cfg.data.get("num_classes")) if name.startswith("val_")]
    if cfg.optimized_metric.startswith("test_"):
        raise ConfigError(f"optimized_metric={cfg.optimized_metric}: the test split is only reported, never used to "
                          f"choose; optimise its validation figure, optimized_metric=val_{cfg.optimized_metric[5:]}")
    if cfg.optimized_metric not in metrics:
        raise ConfigError(f"optimized_metric={cfg.optimized_metric!r}: not a validation metric of metrics.json; "
                          f"use one of {', '.join(metrics)}")


def _check_model(cfg: DictConfig) -> None:
    """``model=zoo``: the config exists and its model builds and trains a batch here; ``model.pretrained``:
    a local checkpoint exists, ``zoo`` names a checkpoint (a URL is fetched by prepare-data)."""
    zoo_config, source = cfg.model.get("config"), cfg.model.get("pretrained")
    if zoo_config is not None or "config" in cfg.model:
        from mmclf.models import zoo
        from mmclf.models.config import model_dict

        num_classes = cfg.data.get("num_classes") or 2  # from the data: any count builds the same model
        zoo.check_trainable(model_dict(cfg, num_classes), cfg.data.image_size, num_classes,
                            key=f"model.config={zoo_config}")
    if source:
        from mmclf.models import pretrained

        pretrained.resolve_source(source, zoo_config)  # zoo: the config must name a checkpoint


MISSING_EXAMPLES = {"data.root": "/datasets/pets", "model.config": "resnet/resnet50_8xb32_in1k"}


def _check_export(cfg: DictConfig) -> None:
    """``runtime.export.onnx`` is a yes or no: a string such as "no" would read as yes."""
    value = OmegaConf.select(cfg, "runtime.export.onnx", default=False)
    if not isinstance(value, bool):
        raise ConfigError(f"runtime.export.onnx={value!r}: must be true or false, e.g. runtime.export.onnx=false")


def _missing_keys(node: DictConfig, prefix: str = ""):
    """Dotted keys whose value is ``???``, found without resolving anything (an interpolation of a
    missing key would raise)."""
    for key in node:
        child = node._get_node(key)
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif isinstance(child, DictConfig) and not child._is_interpolation():
            yield from _missing_keys(child, f"{prefix}{key}.")


def _check_required(cfg: DictConfig) -> None:
    """Keys an option leaves for the user (``???``): named, with an example, before anything reads them."""
    missing = sorted(key for key in _missing_keys(cfg) if not key.startswith("hydra."))  # Hydra's node: Hydra's
    if missing:
        examples = " ".join(f"{key}={MISSING_EXAMPLES.get(key, '...')}" for key in missing)
        raise ConfigError(f"{', '.join(missing)}: required by the options chosen and not given; add e.g. {examples}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key and the fix for any value mmclf cannot run with."""
    _check_required(cfg)
    _integer(cfg, "schedule.runner.max_epochs", 1, "8")
    _positive_number("schedule.optimizer.lr", cfg.schedule.optimizer.lr)
    _integer(cfg, "runtime.checkpoint_config.interval", 1, "1")
    _integer(cfg, "runtime.log_config.interval", 1, "50")
    _integer(cfg, "data.evaluation.interval", 0, "1")
    _integer(cfg, "seed", 0, "0", high=MAX_SEED)
    _check_data(cfg)
    world.check(cfg)
    if not cfg.resume.strip():
        raise ConfigError("resume is empty: use resume=auto (continue), never (start again) or a checkpoint path")
    _check_objective(cfg)
    _check_model(cfg)
    _check_export(cfg)
    backend_of(cfg).check(cfg)


def searches(sweeper: DictConfig) -> bool:
    """Whether a Hydra sweeper uses each job's return value: every sweeper but the basic grid one."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return not issubclass(get_class(sweeper._target_), BasicSweeper)


def check_sweep(config: DictConfig) -> None:
    """A sweeper that searches (Optuna) needs each job's objective back from the backend."""
    if searches(config.hydra.sweeper) and not backend_of(config).returns_objective(config):
        raise ConfigError("hparams_search needs each trial's objective, and this backend returns none as configured: "
                          "use backend=local, backend.mode=local, or backend.mode=submit with backend.wait=true")


def check_parallel_sweep(config: DictConfig) -> None:
    """A parallel launcher on this machine's GPUs: no more jobs at once than GPUs, one each."""
    if config.backend.get("mode", "local") != "local" or not parallel_launcher(config.hydra.launcher):
        return
    from mmclf.models.config import resolve_device

    if resolve_device(config.device) == "cuda":
        import torch

        check_parallel_jobs(config.hydra.launcher.get("n_jobs", 1), torch.cuda.device_count())


class ValidateBeforeRun(Callback):
    """Hydra callback: validate the composed config before Hydra creates any output folder.

    Hydra turns an exception raised in a callback into a warning and carries on, so every error
    ends the process here (one line, exit 2) instead of being raised."""

    validated_run = False  # this process's single run (not a sweep's jobs): its task need not validate again

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors(os_errors=True):
            validate(config)
            check_writable_dir("hydra.run.dir", config.hydra.run.dir)
            check_run_dir(config, config.hydra.run.dir)  # before Hydra writes .hydra/ into it
        ValidateBeforeRun.validated_run = True

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with one_line_errors(os_errors=True):
            validate(config)
            check_sweep(config)
            check_parallel_sweep(config)
            check_writable_dir("hydra.sweep.dir", config.hydra.sweep.dir)
            if config.logger.mlflow is not None and config.backend.get("mode", "local") == "local":
                tracking.create_store(config.logger.mlflow)  # jobs on this machine: once, before they open it

