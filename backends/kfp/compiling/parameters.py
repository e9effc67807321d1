"""The typed pipeline parameters people change per run in the KFP UI, and how a pod applies them.

Each one overrides one config key inside the pods; its default is the compiled config's value.
The config parameter keeps interpolations that point at these keys (compile.py), so a value that
follows one (schedule=fast's one-cycle ``max_lr`` follows the learning rate) follows the UI's value.
Imported by the pods: no kfp here.
"""
import math
from dataclasses import dataclass
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import ConfigError

MAX_SEED = 2**32 - 1  # numpy's seeds are 32-bit, as mmclf.validate says


@dataclass(frozen=True)
class RunParameter:
    name: str  # the pipeline parameter
    key: str  # the config key it overrides
    type: type  # int or float
    description: str  # shown beside it in the KFP UI
    valid: Callable[[float], bool]
    must_be: str  # what ``valid`` accepts, for the error


RUN_PARAMETERS = (
    RunParameter("learning_rate", "schedule.optimizer.lr", float, "the optimizer's learning rate",
                 lambda v: v > 0, "a positive number"),
    RunParameter("epochs", "schedule.runner.max_epochs", int, "how many epochs to train",
                 lambda v: v >= 1, "a positive integer"),
    RunParameter("batch_size", "data.samples_per_gpu", int, "images per training batch",
                 lambda v: v >= 1, "a positive integer"),
    RunParameter("seed", "seed", int, "the run's random seed",
                 lambda v: 0 <= v <= MAX_SEED, f"an integer from 0 to {MAX_SEED}"),
)
PARAMETER_KEYS = tuple(parameter.key for parameter in RUN_PARAMETERS)


def parameter_defaults(cfg: DictConfig) -> dict:
    """Pipeline parameter name -> the config's value, as the parameter's type."""
    return {p.name: p.type(OmegaConf.select(cfg, p.key)) for p in RUN_PARAMETERS}


def _checked(parameter: RunParameter, value):
    """``value`` as the parameter's type, or ConfigError naming the pipeline parameter."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if number and parameter.type is int:
        number = float(value).is_integer()
    if not number or not parameter.valid(value):
        raise ConfigError(f"pipeline parameter {parameter.name}={value!r}: must be {parameter.must_be}; set it "
                          f"in the KFP run's parameters (it overrides {parameter.key})")
    return parameter.type(value)


def apply_parameters(cfg: DictConfig, values: dict) -> DictConfig:
    """``cfg`` with each given pipeline parameter's value at its config key, then resolved."""
    for parameter in RUN_PARAMETERS:
        if values.get(parameter.name) is not None:
            OmegaConf.update(cfg, parameter.key, _checked(parameter, values[parameter.name]))
    OmegaConf.resolve(cfg)  # the links to these keys that the config parameter kept
    return cfg
