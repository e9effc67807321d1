"""mmcv hooks mmclf adds to every training run."""
import math

from mmcv.runner import HOOKS, Hook

from mmclf.errors import MMClfError


class TrainingDiverged(MMClfError):
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
