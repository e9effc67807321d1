"""Step 3: evaluate the final checkpoint on the test split with mmcls's own test and evaluate."""
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from mmclf import datasets  # noqa: F401  (registers CifarFormat in mmcls's DATASETS)
from mmclf.config import to_mmcv_config
from mmclf.errors import StepError
from mmclf.io import write_json_atomic
from mmclf.rundir import RunDir

log = logging.getLogger(__name__)
FLIP = dict(type="RandomFlip", flip_prob=1.0, direction="horizontal")


def final_checkpoint(cfg: DictConfig, run_dir: RunDir) -> Path:
    path = run_dir.checkpoint(cfg.schedule.runner.max_epochs)
    if not path.is_file():
        raise StepError(f"{path}: final checkpoint missing; run the train step first "
                        "(resume=never re-runs every step of this run dir)")
    return path


def predict(model, data_cfg, mm_cfg):
    """(dataset, class scores of every image) with mmcls's single_gpu_test."""
    from mmcls.apis import single_gpu_test
    from mmcls.datasets import build_dataloader, build_dataset

    dataset = build_dataset(data_cfg, default_args=dict(test_mode=True))
    loader = build_dataloader(
        dataset, samples_per_gpu=mm_cfg.data.samples_per_gpu, workers_per_gpu=mm_cfg.data.workers_per_gpu,
        dist=False, shuffle=False, round_up=False, persistent_workers=False)
    return dataset, np.vstack(single_gpu_test(model, loader))


def test(cfg: DictConfig, run_dir: RunDir) -> None:
    """Write ``eval_result.json`` (mmcls evaluate()) and ``predictions.json`` into ``run_dir``."""
    from mmcls.models import build_classifier
    from mmcls.utils import wrap_non_distributed_model
    from mmcv.runner import load_checkpoint

    mm_cfg = to_mmcv_config(cfg, run_dir)
    checkpoint = final_checkpoint(cfg, run_dir)
    model = build_classifier(mm_cfg.model)
    try:
        load_checkpoint(model, str(checkpoint), map_location="cpu")
    except Exception as err:  # truncated, or a pickle that weights_only refuses to run
        raise StepError(f"{checkpoint}: the final checkpoint does not load ({type(err).__name__}: {err}); run the "
                        "same command again: training resumes from the newest good checkpoint") from None
    model = wrap_non_distributed_model(model, mm_cfg.device, device_ids=mm_cfg.gpu_ids)
    dataset, scores = predict(model, mm_cfg.data.test, mm_cfg)
    log.info("tested %s on %d images", checkpoint, len(dataset))
    if mm_cfg.get("flip_tta"):  # test-time augmentation: average with the mirrored images' scores
        flipped = dict(mm_cfg.data.test, pipeline=[FLIP, *mm_cfg.data.test.pipeline])
        scores = (scores + predict(model, flipped, mm_cfg)[1]) / 2
    topk = (1, min(5, len(dataset.CLASSES)))  # jobs.scalar_metric_names lists the scalars this gives
    result = dataset.evaluate(list(scores), metric=["accuracy", "precision", "recall", "f1_score"],
                              metric_options={"topk": topk})
    write_json_atomic(run_dir.predictions, {
        "classes": list(dataset.CLASSES),
        "gt_label": dataset.get_gt_labels().tolist(),
        "pred_label": scores.argmax(axis=1).tolist(),
    })
    write_json_atomic(run_dir.eval_result, {key: float(value) for key, value in result.items()})
