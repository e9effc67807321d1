"""mmclf's parts in mmcls's and mmcv's registries, all in one function: :func:`register_all_modules`.

Each step that builds mmcls objects calls it first. mmcls's own tools reach it through the dumped
config's ``custom_imports``, which can only name a module: importing this one registers everything.
"""


def register_all_modules() -> None:
    """Register mmclf's datasets (CifarFormat, CIFAR10Split, ImageFolderCache), hooks (NonFiniteLoss,
    EpochSeed, the logger group's), runner (SafeEpochBasedRunner) and model wrapper (AutocastModel), and
    give mmcls's ``train_model`` the DDP wrapper that works on the CPU and with PyTorch 2 (mmclf/training/ddp.py).
    Idempotent: a module registers its classes when it is first imported."""
    from mmclf.data import datasets  # noqa: F401
    from mmclf.training import checkpoints, hooks  # noqa: F401  (each registers its classes when imported)
    from mmclf.training.ddp import wrap_models_in_mmcls
    from mmclf.training.fast import precision  # noqa: F401

    wrap_models_in_mmcls()


register_all_modules()
