"""The one bridge from the composed OmegaConf config to an ``mmcv.Config`` for mmcls."""
import hashlib

from omegaconf import DictConfig, OmegaConf

from mmclf.rundir import RunDir

# Keys of the data node that mmcls reads inside ``cfg.data``; the others are mmclf's.
MMCLS_DATA_KEYS = ("samples_per_gpu", "workers_per_gpu", "persistent_workers", "train", "val", "test")
# mmclf data keys that mmcls configs keep at their top level: lifted there for readers of the dump.
LIFTED_DATA_KEYS = ("img_norm_cfg", "train_pipeline", "test_pipeline", "evaluation")


def fingerprint(node) -> str:
    """A short, stable hash of a config node's resolved values."""
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    return hashlib.sha256(OmegaConf.to_yaml(container).encode()).hexdigest()[:16]


def run_fingerprint(cfg: DictConfig) -> str:
    """What a run's outputs depend on: the config, minus how it is run, whether it resumes,
    which metric a sweeper reads from it and where it reports as it trains."""
    container = OmegaConf.to_container(cfg, resolve=True)
    for key in ("backend", "resume", "sweep", "optimized_metric", "logger"):
        container.pop(key, None)
    return fingerprint(container)


# Modules that register mmclf's parts in mmcls's and mmcv's registries (CifarFormat, hooks, runner).
MMCLF_REGISTRANTS = ("mmclf.datasets", "mmclf.hooks", "mmclf.checkpoints")

# Data keys that say where or how fast the data is read (or how often it is evaluated), not what it is.
_DATA_ACCESS_KEYS = ("root", "workers_per_gpu", "persistent_workers", "loader", "train", "val", "test", "evaluation")


def weights_fingerprint(cfg: DictConfig) -> str:
    """What a checkpoint's training depends on, short of its length: model, data (its content and
    pipelines, not where it lives), schedule (but ``max_epochs``: training longer resumes), seed.

    A checkpoint whose fingerprint differs was trained by another recipe and is not resumed."""
    data = OmegaConf.to_container(cfg.data, resolve=True)
    schedule = OmegaConf.to_container(cfg.schedule, resolve=True)
    schedule.get("runner", {}).pop("max_epochs", None)
    return fingerprint({"model": OmegaConf.to_container(cfg.model, resolve=True),
                        "data": {k: v for k, v in data.items() if k not in _DATA_ACCESS_KEYS},
                        "schedule": schedule, "seed": cfg.seed, "deterministic": cfg.deterministic})


def resolve_device(device) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return str(device)
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def to_mmcv_config(cfg: DictConfig, run_dir):
    """Build the ``mmcv.Config`` mmcls's own APIs (and tools) expect from the composed config."""
    import mmcv  # here, not at the top: the entry point imports this module and starts fast

    data = OmegaConf.to_container(cfg.data, resolve=True)
    mm = {"model": OmegaConf.to_container(cfg.model, resolve=True)}
    mm.update({key: data[key] for key in LIFTED_DATA_KEYS if key in data})
    if "evaluation" in mm:  # top-5 needs five classes; jobs.scalar_metric_names says the same
        mm["evaluation"].setdefault("metric_options", {"topk": (1, min(5, cfg.data.num_classes))})
    mm["data"] = {key: data[key] for key in MMCLS_DATA_KEYS if key in data}
    mm.update(OmegaConf.to_container(cfg.schedule, resolve=True))
    mm.update(OmegaConf.to_container(cfg.runtime, resolve=True))
    mm["workflow"] = [tuple(stage) for stage in mm.get("workflow", [["train", 1]])]
    device = resolve_device(cfg.device)
    mm.update(work_dir=str(RunDir(run_dir).work_dir), seed=cfg.seed, device=device, gpu_ids=[0])
    # mmcls's own tools (tools/test.py, ...) import these when they load the dumped config, so
    # they find mmclf's dataset type, hooks and runner in mmcls's and mmcv's registries.
    mm["custom_imports"] = dict(imports=list(MMCLF_REGISTRANTS), allow_failed_imports=False)
    return mmcv.Config(mm)
