"""mmcv hooks mmclf adds to every training run."""
import contextlib
import math
from typing import Optional

from mmcv.runner import HOOKS, Hook, master_only
from mmcv.runner.hooks import LoggerHook

from mmclf.errors import MMClfError, StepFailed
from mmclf.reports.tracking import open_run, store_failed, tracking_uri
from mmclf.run.rundir import RunDir


class TrainingDiverged(StepFailed):
    """The loss became NaN or infinite."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Stop at the first NaN or infinite loss, before the optimizer applies it (hours of
    training on garbage helps nobody). Registered with the highest priority, so it runs
    before mmcv's OptimizerHook in ``after_train_iter``."""

    def after_train_iter(self, runner):
        loss = runner.outputs["log_vars"]["loss"]  # already a float: no extra device sync
        if not math.isfinite(loss):
            lr = runner.current_lr()
            lr = lr[0] if isinstance(lr, list) else lr
            raise TrainingDiverged(
                f"training loss became {loss} at epoch {runner.epoch + 1}, iteration {runner.inner_iter + 1} "
                f"(lr {lr:.3g}); lower schedule.optimizer.lr or check the data")


def epoch_seed(seed: int, epoch: int, rank: Optional[int] = None) -> int:
    """A 32-bit seed for ``epoch`` (0-based) of a run seeded with ``seed``; for one ``rank`` of a
    distributed run, its own (a 1-process run passes no rank: its draws stay what they were)."""
    import numpy as np

    return int(np.random.SeedSequence([seed, epoch, *([] if rank is None else [rank])]).generate_state(1)[0])


@HOOKS.register_module()
class EpochSeedHook(Hook):
    """Seed every random number generator at the start of each epoch from (seed, epoch).

    Epoch e's shuffle and augmentation then depend on nothing but the seed and e, so a run that
    resumes at epoch e (after a kill) draws exactly what the uninterrupted run drew: its final
    weights are bit-identical on the CPU, with nothing to save in the checkpoints. It covers
    Python's, numpy's and torch's generators in this process (a DataLoader's shuffle among their
    draws), each sample's augmentation (:func:`seed_data_loader`: the same with any number of
    workers, persistent or not) and a loader with ``set_epoch`` (the device loader's own generator).
    Registered with the highest priority: before anything else in the epoch draws a number.
    """

    def __init__(self, seed: int):
        self.seed = seed

    def before_train_epoch(self, runner):
        import random

        import numpy as np
        import torch

        # Each rank its own draws (mixup or dropout of its own batches), the same ones when it resumes.
        seed = epoch_seed(self.seed, runner.epoch, runner.rank if runner.world_size > 1 else None)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)  # and every CUDA device's
        if hasattr(runner.data_loader, "set_epoch"):
            runner.data_loader.set_epoch(runner.epoch)
        # mmcls adds its DistSamplerSeedHook only for a runner named EpochBasedRunner exactly: without
        # this, a distributed sampler would shuffle every epoch alike
        if hasattr(getattr(runner.data_loader, "sampler", None), "set_epoch"):
            runner.data_loader.sampler.set_epoch(runner.epoch)
        if isinstance(runner.data_loader, torch.utils.data.DataLoader):
            seed_data_loader(runner.data_loader, epoch_seed(self.seed, runner.epoch))


def seed_data_loader(loader, seed: int) -> None:
    """Seed what a DataLoader draws for the epoch about to start, before its iterator is made.

    Its workers' base seed comes from a generator of its own: from torch's global one, it would
    be drawn only when workers start (each epoch, or the first of a persistent loader's), which
    shifts the shuffle drawn after it with persistent_workers and the run's start. A dataset with
    ``set_epoch_seed`` (mmclf.data.sample_seeds) draws each sample's augmentation from ``seed`` and the
    sample's index: the same on every rank, wherever the sample is loaded."""
    import torch

    loader.generator = torch.Generator().manual_seed(seed)
    if hasattr(loader.dataset, "set_epoch_seed"):
        loader.dataset.set_epoch_seed(seed)


@HOOKS.register_module()
class MlflowRunHook(LoggerHook):
    """Log mmcv's tags (train loss and lr per logged iteration, val accuracy per evaluated epoch)
    to the run dir's MLflow run, stepped by iteration."""

    def __init__(self, run_dir: str, config: dict, interval: int = 10, ignore_last: bool = False, **kwargs):
        super().__init__(interval=interval, ignore_last=ignore_last, **kwargs)
        self.run_dir, self.config = RunDir(run_dir), config
        self.mlflow = None

    @master_only  # rank 0 reports for a distributed run, as mmcv's own logger hooks do
    def before_run(self, runner) -> None:
        super().before_run(runner)
        with self._store_errors_in_one_line():
            self.mlflow = open_run(self.run_dir, self.config)

    @master_only
    def log(self, runner) -> None:
        tags = self.get_loggable_tags(runner)
        if tags:
            with self._store_errors_in_one_line():
                self.mlflow.log_metrics(tags, step=self.get_iter(runner))

    @contextlib.contextmanager
    def _store_errors_in_one_line(self):
        try:
            yield
        except MMClfError:
            raise
        except Exception as err:
            raise store_failed(tracking_uri(self.config["logger"]["mlflow"]), err) from None

    @master_only
    def after_run(self, runner) -> None:
        self.mlflow.end_run()
