"""Step 2: train with mmcls's own builders and mmcv's EpochBasedRunner."""
import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig

from mmclf.models.config import to_mmcv_config, weights_fingerprint
from mmclf.reports.tracking import end_failed_run, logger_hooks
from mmclf.run.logs import mmcls_logger
from mmclf.run.rundir import RunDir
from mmclf.setup_env import register_all_modules
from mmclf.steps.launch import launch
from mmclf.training.checkpoints import SafeEpochBasedRunner, checkpoint_meta, resume_checkpoint, tidy_work_dir
from mmclf.training.fast import uses_device_loader
from mmclf.training.fast.runner import train_model as device_train_model
from mmclf.training.world import broadcast_from_rank_zero, is_worker, world_size

log = logging.getLogger(__name__)


def outputs_intact(cfg: DictConfig, run_dir: RunDir) -> bool:
    """Whether the final checkpoint verifies and loads: a damaged one sends a re-run back to training,
    which resumes from the newest good checkpoint."""
    return checkpoint_meta(run_dir.checkpoint(cfg.schedule.runner.max_epochs)) is not None


def train(cfg: DictConfig, run_dir: RunDir) -> None:
    """Train ``cfg.model`` on ``cfg.data.train``; checkpoints and logs go to ``run_dir.work_dir``.
    With more than one process (``dist``), torchrun runs :func:`train_this_process` on each."""
    if world_size(cfg) > 1 and not is_worker():
        launch(cfg, run_dir)
    else:
        train_this_process(cfg, run_dir)


def train_this_process(cfg: DictConfig, run_dir: RunDir) -> None:
    """Train in this process: alone, or as one rank of a process group (mmcls's distributed path)."""
    from mmcls import __version__ as mmcls_version
    from mmcls.apis import set_random_seed, train_model
    from mmcls.datasets import build_dataset
    from mmcls.models import build_classifier
    from mmcv.runner import get_dist_info

    register_all_modules()
    # mmcv's first logger of a process mutes the console's handlers (the mmcls imports above may
    # make one): mmcls_logger restores them before this step logs anything.
    logger = mmcls_logger(cfg.runtime.log_level)
    rank, processes = get_dist_info()  # (0, 1) outside a process group
    mm_cfg = to_mmcv_config(cfg, run_dir)
    mm_cfg.gpu_ids = list(range(processes))  # as mmcls's tools/train.py sets it for a distributed run
    out = run_dir.work_dir
    weights = weights_fingerprint(cfg)
    if rank == 0:  # rank 0 alone writes the run dir; the others wait for it, then read it
        out.mkdir(parents=True, exist_ok=True)
        mm_cfg.dump(str(run_dir.mmcls_config))  # mmcls's tools load the run's checkpoints with it (custom_imports)
        resume_from = mm_cfg.resume_from or resume_checkpoint(cfg.resume, out, weights, mm_cfg.runner.max_epochs,
                                                              processes)
        tidy_work_dir(out, Path(resume_from) if resume_from else None,
                      mm_cfg.checkpoint_config.get("max_keep_ckpts", -1))
    mm_cfg.resume_from = broadcast_from_rank_zero(str(resume_from) if rank == 0 and resume_from else None)
    if mm_cfg.resume_from:
        log.info("resuming from %s", mm_cfg.resume_from)
    if mm_cfg.runner.type == "EpochBasedRunner":
        mm_cfg.runner.type = SafeEpochBasedRunner.__name__  # the same loop, atomic checkpoints
    log_config = mm_cfg.log_config
    log_config.hooks = [*log_config.hooks, *logger_hooks(cfg, run_dir, log_config.interval)]  # logger group
    mm_cfg.custom_hooks = [*mm_cfg.get("custom_hooks", []), dict(type="NonFiniteLossHook", priority="HIGHEST"),
                           dict(type="EpochSeedHook", seed=cfg.seed, priority="HIGHEST")]
    timestamp = broadcast_from_rank_zero(time.strftime("%Y%m%d_%H%M%S", time.localtime()))
    # mmcv's get_root_logger attaches a log file only on its first call per process, so each
    # run (a sweep runs many in one process) attaches and removes its own; rank 0's alone.
    file_handler = logging.FileHandler(out / f"{timestamp}.log") if rank == 0 else logging.NullHandler()
    file_handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(file_handler)
    try:
        set_random_seed(cfg.seed, deterministic=cfg.deterministic)
        dataset = build_dataset(mm_cfg.data.train)
        model = build_classifier(mm_cfg.model)
        model.init_weights()  # loads model.pretrained's backbone weights (mmcv's Pretrained init_cfg)
        init_cfg = mm_cfg.model.get("backbone", {}).get("init_cfg") or {}
        if init_cfg.get("type") == "Pretrained":
            from mmclf.models.pretrained import describe_load

            log.info("%s", describe_load(model, Path(init_cfg["checkpoint"])))
        model.CLASSES = dataset.CLASSES
        mm_cfg.checkpoint_config.meta = dict(mmcls_version=mmcls_version, CLASSES=dataset.CLASSES)
        log.info("training %s on %d images for %d epochs on %s", mm_cfg.model.backbone.type,
                 len(dataset), mm_cfg.runner.max_epochs, mm_cfg.device)
        # data.loader=device: the same model, runner hooks and checkpoints, batches made on the device
        train_fn = device_train_model if uses_device_loader(cfg.data) else train_model
        validate = mm_cfg.get("evaluation", {}).get("interval", 0) > 0  # per-epoch accuracy on the test split
        if processes > 1:
            log.info("rank 0 of %d: %d images per process per epoch, %d per batch", processes,
                     math.ceil(len(dataset) / processes), mm_cfg.data.samples_per_gpu)
        meta = dict(seed=cfg.seed, exp_name="mmclf", weights_fingerprint=weights, world_size=processes)
        train_fn(model, [dataset], mm_cfg, distributed=processes > 1, validate=validate, timestamp=timestamp,
                 device=mm_cfg.device, meta=meta)
    except Exception:
        end_failed_run()  # mmcv calls no hook when training raises: the MLflow run would stay open
        raise
    finally:
        logger.removeHandler(file_handler)
        file_handler.close()
