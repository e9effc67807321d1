"""mmcls's ``train_model`` for the device loader: the same optimizer, hooks, logs and checkpoints."""
from mmcv.runner import RUNNERS, EpochBasedRunner, build_optimizer, get_dist_info

from mmclf.errors import ConfigError
from mmclf.training.checkpoints import NoIdlePause
from mmclf.training.fast import device_loader
from mmclf.training.fast.precision import prepare_model, resolve_perf


def device_runner_class(runner_type: str) -> type:
    """The configured runner class (EpochBasedRunner or a subclass that keeps its loop, such as
    mmclf's checkpoint-safe one) with ``NoIdlePause`` mixed in."""
    base = RUNNERS.get(runner_type)
    # NoIdlePause replaces run() and train(): a runner with its own would silently lose it
    keeps_loop = base is not None and issubclass(base, EpochBasedRunner) and (
        issubclass(base, NoIdlePause) or (base.train is EpochBasedRunner.train and base.run is EpochBasedRunner.run))
    if not keeps_loop:
        raise ConfigError(f"schedule.runner.type={runner_type}: data.loader=device runs EpochBasedRunner's loop only")
    return base if issubclass(base, NoIdlePause) else type(f"Device{base.__name__}", (NoIdlePause, base), {})


def train_model(model, dataset, cfg, distributed=False, validate=False, timestamp=None, device=None, meta=None):
    """Train like ``mmcls.apis.train_model`` (same arguments), with batches from the device loader
    and ``cfg.perf`` (runtime.perf) applied; returns the runner."""
    from mmcls.utils import get_root_logger

    perf = resolve_perf(cfg.get("perf"), cfg.device)
    datasets = dataset if isinstance(dataset, (list, tuple)) else [dataset]
    rank, world_size = get_dist_info()  # each rank batches its own share of every epoch
    loaders = [device_loader.from_dataset(ds, cfg.data.train.pipeline, cfg.data.samples_per_gpu, cfg.device,
                                          cfg.seed, perf.channels_last, rank, world_size) for ds in datasets]
    model = prepare_model(model, cfg.device, perf, distributed)
    runner_args = {key: value for key, value in cfg.runner.items() if key != "type"}
    runner = device_runner_class(cfg.runner.type)(
        model=model, batch_processor=None, optimizer=build_optimizer(model, cfg.optimizer), work_dir=cfg.work_dir,
        logger=get_root_logger(), meta=meta, **runner_args)
    runner.timestamp = timestamp  # names the .log.json after the run's .log, as mmcls does
    runner.register_training_hooks(cfg.lr_config, cfg.optimizer_config, cfg.checkpoint_config, cfg.log_config,
                                   cfg.get("momentum_config"), custom_hooks_config=cfg.get("custom_hooks"))
    if validate:
        register_eval_hook(runner, cfg, distributed)
    if cfg.get("resume_from"):
        runner.resume(cfg.resume_from)
    elif cfg.get("load_from"):
        runner.load_checkpoint(cfg.load_from)
    runner.run(loaders, cfg.workflow)
    return runner


def register_eval_hook(runner, cfg, distributed: bool) -> None:
    """Per-epoch validation as mmcls's ``train_model`` sets it up: its own DataLoader over the val
    split (evaluation reads each image once, unaugmented) and mmcls's EvalHook after the IterTimerHook
    (DistEvalHook over a split shared out between the ranks, when distributed)."""
    from mmcls.core import DistEvalHook, EvalHook
    from mmcls.datasets import build_dataloader, build_dataset

    val_dataset = build_dataset(cfg.data.val, dict(test_mode=True))
    val_loader = build_dataloader(val_dataset, samples_per_gpu=cfg.data.samples_per_gpu,
                                  workers_per_gpu=cfg.data.workers_per_gpu, dist=distributed, shuffle=False,
                                  round_up=True, persistent_workers=False,
                                  multiprocessing_context=cfg.data.get("multiprocessing_context"))
    eval_cfg = {**cfg.evaluation, "by_epoch": True}
    hook = DistEvalHook if distributed else EvalHook
    runner.register_hook(hook(val_loader, **eval_cfg), priority="LOW")
