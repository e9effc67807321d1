"""Step 1: make sure the dataset exists under ``data.root`` (shared by runs, outside run dirs), and
the pretrained checkpoint ``model.pretrained`` names, downloaded once beside the data."""
from omegaconf import DictConfig, OmegaConf

from mmclf.data import sources
from mmclf.models.config import pretrained_cache
from mmclf.run.io import write_json_atomic, write_text_atomic
from mmclf.run.rundir import RunDir


def prepare_data(cfg: DictConfig, run_dir: RunDir) -> None:
    """Prepare the dataset (and the pretrained checkpoint), then record the resolved config this run
    uses as ``config.yaml`` and, for your own images, the data manifest ``data.json`` (after: data
    the run cannot use leaves the run dir as it was)."""
    manifest = sources.prepare(cfg.data)
    if cfg.model.get("pretrained"):
        from mmclf.models import pretrained

        source = pretrained.resolve_source(cfg.model.pretrained, cfg.model.get("config"))
        pretrained.fetch(source, pretrained_cache(cfg))
    run_dir.path.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        write_json_atomic(run_dir.data_manifest, manifest)
    record_config(cfg, run_dir)


def record_config(cfg: DictConfig, run_dir: RunDir) -> None:
    """``config.yaml``: the run's config, resolved; what a step in a process of its own reads
    (``python -m mmclf.steps``: torchrun's ranks, Kubeflow Trainer's nodes)."""
    write_text_atomic(run_dir.config, OmegaConf.to_yaml(cfg, resolve=True))
