"""The one bridge from the composed OmegaConf config to an ``mmcv.Config`` for mmcls."""
import hashlib
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmclf.errors import StepError
from mmclf.models.zoo import with_num_classes
from mmclf.run.io import read_json
from mmclf.run.rundir import RunDir
from mmclf.run.sweep_gpus import job_gpu

# Keys of the data node that mmcls reads inside ``cfg.data``; the others are mmclf's.
MMCLS_DATA_KEYS = ("samples_per_gpu", "workers_per_gpu", "persistent_workers", "train", "val", "test")
# DataLoader workers start through this one context, never the process's default: inside a joblib
# (loky) worker of a parallel sweep the default is loky's, which cannot start torch's worker processes.
WORKER_START_METHOD = "fork" if sys.platform == "linux" else "spawn"
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



# Data keys that say where or how fast the data is read (or how often it is evaluated), not what it is.
_DATA_ACCESS_KEYS = ("root", "cache_dir", "workers_per_gpu", "persistent_workers", "loader", "train", "val", "test",
                     "evaluation")


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


def class_count(cfg: DictConfig, run_dir) -> int:
    """``data.num_classes``, or for data whose classes come from the data (null) the count that
    prepare-data found (the run's data manifest)."""
    if cfg.data.get("num_classes") is not None:
        return cfg.data.num_classes
    manifest = RunDir(run_dir).data_manifest
    if not manifest.is_file():
        raise StepError(f"{manifest}: missing; run the prepare_data step first (it finds the classes)")
    return len(read_json(manifest)["classes"])


def merged(base: dict, over: dict) -> dict:
    """``base`` with ``over``'s keys merged in, dicts key by key (plain dicts: mmcls wants its tuples)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_dict(cfg: DictConfig, num_classes: int) -> dict:
    """mmcls's ``model`` dict: the group's own keys, or for ``model=zoo`` the dict of the mmcls config
    ``model.config`` names with the group's other keys merged over it; ``model.pretrained`` becomes the
    backbone's ``init_cfg`` (mmcv's Pretrained, prefix backbone)."""
    node = OmegaConf.to_container(cfg.model, resolve=True)
    zoo_config, source = node.pop("config", None), node.pop("pretrained", None)
    if zoo_config:
        from mmclf.models import zoo  # reads mmcls's config files (mmcv): only for the models that come from them

        # A fine-tuning config's own checkpoint URL would be fetched by mmcv past mmclf's cache and hash
        # check: only model.pretrained loads weights (the README says to name that URL there).
        node = zoo.without_pretrained(merged(zoo.model_dict(zoo_config, num_classes), node))
    model = with_num_classes(node, num_classes)
    if source:
        from mmclf.models import pretrained

        path = pretrained.local_path(pretrained.resolve_source(source, zoo_config), pretrained_cache(cfg))
        model["backbone"]["init_cfg"] = pretrained.init_cfg(path)
    return model


def pretrained_cache(cfg: DictConfig) -> Path:
    """Where downloaded pretrained checkpoints are kept: beside the data (on Kubeflow, the volume)."""
    return Path(cfg.data.cache_dir) / "pretrained"


def _own_images(data: dict, run_dir) -> dict:
    """``data`` with the splits of your own images (ImageFolderCache) pointed at the run's data manifest,
    and pipelines chosen by ``data.image_size`` where the config leaves them null."""
    if "image_size" in data:
        from mmclf.data import image_cache  # numpy: not on the path that only composes and compiles

        chosen = image_cache.default_pipelines(data["image_size"], data["img_norm_cfg"])
        for key, pipeline in zip(("train_pipeline", "test_pipeline"), chosen, strict=True):
            if data.get(key) is None:
                data[key] = pipeline
    for split in ("train", "val", "test"):
        if data[split]["type"] == "ImageFolderCache":
            data[split]["ann_file"] = str(RunDir(run_dir).data_manifest.absolute())
        if data[split].get("pipeline") is None:
            data[split]["pipeline"] = data["train_pipeline" if split == "train" else "test_pipeline"]
        data[split]["pipeline"] = [_with_tuple_size(step) for step in data[split]["pipeline"]]
    return data


def _with_tuple_size(step: dict) -> dict:
    """A pipeline step from YAML, which has no tuples: mmcls's Resize asserts its ``size`` (e.g. [256, -1]) is one."""
    return {**step, "size": tuple(step["size"])} if isinstance(step.get("size"), list) else step


def _absolute_paths(data: dict) -> dict:
    """``data`` with each split's files named from the root (the dumped mmcls_config.py is read by
    mmcls's tools, started from any folder)."""
    for split in ("train", "val", "test"):
        for key in ("data_prefix", "ann_file"):
            if data.get(split, {}).get(key):
                data[split][key] = str(Path(data[split][key]).absolute())
    return data


def to_mmcv_config(cfg: DictConfig, run_dir):
    """Build the ``mmcv.Config`` mmcls's own APIs (and tools) expect from the composed config."""
    import mmcv  # here, not at the top: the entry point imports this module and starts fast

    data = _absolute_paths(_own_images(OmegaConf.to_container(cfg.data, resolve=True), run_dir))
    num_classes = class_count(cfg, run_dir)
    mm = {"model": model_dict(cfg, num_classes)}
    mm.update({key: data[key] for key in LIFTED_DATA_KEYS if key in data})
    if "evaluation" in mm:  # top-5 needs five classes; jobs.scalar_metric_names says the same
        mm["evaluation"].setdefault("metric_options", {"topk": (1, min(5, num_classes))})
    mm["data"] = {key: data[key] for key in MMCLS_DATA_KEYS if key in data}
    if mm["data"].get("workers_per_gpu"):  # mmcls passes cfg.data's other keys to every DataLoader it builds
        mm["data"]["multiprocessing_context"] = WORKER_START_METHOD
    else:  # no worker processes, none to keep: torch's DataLoader refuses persistent_workers=True with none
        mm["data"]["persistent_workers"] = False
    mm.update(OmegaConf.to_container(cfg.schedule, resolve=True))
    mm.update(OmegaConf.to_container(cfg.runtime, resolve=True))
    mm.pop("export", None)  # mmclf's export step reads runtime.export from the run's config; mmcls has no such key
    mm["workflow"] = [tuple(stage) for stage in mm.get("workflow", [["train", 1]])]
    device = resolve_device(cfg.device)
    mm.update(work_dir=str(RunDir(run_dir).work_dir), seed=cfg.seed, device=device, gpu_ids=[job_gpu() or 0])
    # mmcls's own tools (tools/test.py, ...) import this when they load the dumped config, so they
    # find mmclf's dataset types, hooks and runner in mmcls's and mmcv's registries.
    mm["custom_imports"] = dict(imports=["mmclf.setup_env"], allow_failed_imports=False)
    return mmcv.Config(mm)
