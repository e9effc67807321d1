"""Precision and layout switches of the fast path (``runtime.perf``), applied to an mmcls model.

Defaults keep CPU results as they are: bf16 autocast and channels_last only on a GPU
(``auto``), ``torch.compile`` only when asked. The model stays mmcls's: autocast wraps its
``train_step``, channels_last is a memory layout and compile works in place, so checkpoints
keep mmcls's keys and the test step loads them as usual.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from mmcv.parallel import MODULE_WRAPPERS
from torch import nn

from mmclf.errors import ConfigError
from mmclf.training.ddp import wrap_distributed_model

KEY = "runtime.perf"
# Mirrors conf/runtime/default.yaml, for mmcv configs that have no ``perf`` (plain mmcls users).
DEFAULTS = {"autocast": "auto", "channels_last": "auto", "cudnn_benchmark": True, "compile": False}


@dataclass(frozen=True)
class Perf:
    """The switches resolved for one device."""

    autocast_dtype: Optional[torch.dtype]  # None: fp32
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool


def _flag(options: dict, name: str, device: str) -> bool:
    value = options[name]
    if value == "auto":
        return device == "cuda"
    if not isinstance(value, bool):
        raise ConfigError(f"{KEY}.{name}={value!r}: use auto, true or false")
    return value


def resolve_perf(options, device: str) -> Perf:
    """``runtime.perf`` (a mapping, or None for the defaults) resolved for ``device`` (cpu/cuda)."""
    options = {**DEFAULTS, **(options or {})}
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{KEY}: unknown key(s) {unknown}; the switches are {sorted(DEFAULTS)}")
    autocast = options["autocast"]
    if autocast not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"{KEY}.autocast={autocast!r}: use auto (bf16 on a GPU that has it, fp32 on CPU), "
                          "bf16 or fp32")
    if autocast == "auto":
        autocast = "bf16" if device == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    for name in ("cudnn_benchmark", "compile"):
        if not isinstance(options[name], bool):
            raise ConfigError(f"{KEY}.{name}={options[name]!r}: use true or false")
    return Perf(autocast_dtype=torch.bfloat16 if autocast == "bf16" else None,
                channels_last=_flag(options, "channels_last", device),
                cudnn_benchmark=options["cudnn_benchmark"], compile=options["compile"])


@MODULE_WRAPPERS.register_module()
class AutocastModel(nn.Module):
    """Runs the wrapped mmcls model's ``train_step`` and ``val_step`` under ``torch.autocast``.

    Only the forward pass is autocast: mmcv's OptimizerHook calls ``backward`` after
    ``train_step`` returns, as PyTorch recommends. Registered as an mmcv module wrapper, so
    checkpoints save and load the inner model (``.module``), as with MMDataParallel.
    """

    def __init__(self, module: nn.Module, device: str, dtype: Optional[torch.dtype]):
        super().__init__()
        self.module = module
        self.device_type = device
        self.dtype = dtype

    def train_step(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.module.train_step(*args, **kwargs)

    def val_step(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None):
            return self.module.val_step(*args, **kwargs)

    def forward(self, img, **kwargs):
        """Inference for mmcls's EvalHook (per-epoch validation): the batch from its DataLoader
        moved to the device, in float32, since mmcls turns the scores into numpy, which has no bf16."""
        return self.module(img=img.to(self.device_type), **kwargs)


def prepare_model(model: nn.Module, device: str, perf: Perf, distributed: bool = False) -> nn.Module:
    """Move ``model`` to ``device`` in the configured layout, compile its backbone if asked, and wrap
    it: in an AutocastModel, or, when distributed, in the DDP wrapper that autocasts itself."""
    if device == "cuda":
        # cudnn.benchmark times algorithms per shape and may pick differently run to run:
        # deterministic=true (which sets cudnn.deterministic) wins.
        torch.backends.cudnn.benchmark = perf.cudnn_benchmark and not torch.backends.cudnn.deterministic
    memory_format = torch.channels_last if perf.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format)
    if perf.compile:
        # In place (nn.Module.compile), so state_dict keys stay mmcls's. The backbone holds
        # nearly all the compute; the head's loss and logging code stay eager.
        model.backbone.compile()
    if distributed:
        return wrap_distributed_model(model, device, broadcast_buffers=False, autocast_dtype=perf.autocast_dtype)
    return AutocastModel(model, device, perf.autocast_dtype)
