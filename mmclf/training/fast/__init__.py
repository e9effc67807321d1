"""mmclf's fast path (``data.loader=device``): the split on the training device, batches
augmented there, bf16 autocast / channels_last / torch.compile (``runtime.perf``), fed to
mmcv's runner with mmcls's model, hooks, checkpoints and evaluation unchanged.

``data.loader=mmcls`` stays the reference: mmcls's own ``train_model`` and DataLoader.
This module stays light (no torch/mmcv import): the entry point validates ``data.loader`` with it.
"""
from mmclf.errors import ConfigError

LOADERS = ("mmcls", "device")


def uses_device_loader(data_cfg) -> bool:
    """True for ``data.loader=device``, False for ``mmcls``; any other value is a ConfigError."""
    loader = data_cfg.get("loader", "mmcls")
    if loader not in LOADERS:
        raise ConfigError(f"data.loader={loader!r}: use mmcls (mmcls's DataLoader, the reference) "
                          "or device (batches made on the training device)")
    return loader == "device"
