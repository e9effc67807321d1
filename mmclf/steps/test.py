"""Step 3: evaluate the final checkpoint with mmcls's own test and evaluate, on the test split
(reported, never used to choose anything) and on the validation split (what sweeps optimise)."""
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from mmclf.errors import StepError
from mmclf.models.config import to_mmcv_config
from mmclf.reports import report
from mmclf.run.io import write_json_atomic
from mmclf.run.rundir import RunDir
from mmclf.setup_env import register_all_modules

log = logging.getLogger(__name__)
FLIP = dict(type="RandomFlip", flip_prob=1.0, direction="horizontal")
METRICS = ["accuracy", "precision", "recall", "f1_score"]


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
        dist=False, shuffle=False, round_up=False, persistent_workers=False,
        multiprocessing_context=mm_cfg.data.get("multiprocessing_context"))
    return dataset, np.vstack(single_gpu_test(model, loader))


def evaluate(model, data_cfg, mm_cfg) -> tuple:
    """(dataset, scores, mmcls's evaluate() as floats) of one split, with flip TTA when configured."""
    dataset, scores = predict(model, data_cfg, mm_cfg)
    if mm_cfg.get("flip_tta"):  # test-time augmentation: average with the mirrored images' scores
        flipped = dict(data_cfg, pipeline=[FLIP, *data_cfg.pipeline])
        scores = (scores + predict(model, flipped, mm_cfg)[1]) / 2
    topk = (1, min(5, len(dataset.CLASSES)))  # jobs.scalar_metric_names lists the scalars this gives
    result = dataset.evaluate(list(scores), metric=METRICS, metric_options={"topk": topk})
    return dataset, scores, {key: float(value) for key, value in result.items()}


def test(cfg: DictConfig, run_dir: RunDir) -> None:
    """Write ``eval_result.json`` (test split), ``val_result.json`` (validation split), ``predictions.json``
    and ``misclassified.png`` (a gallery of misclassified test images) into ``run_dir``."""
    from mmcls.models import build_classifier
    from mmcls.utils import wrap_non_distributed_model
    from mmcv.runner import load_checkpoint

    from mmclf.training.checkpoints import verify

    register_all_modules()
    mm_cfg = to_mmcv_config(cfg, run_dir)
    checkpoint = final_checkpoint(cfg, run_dir)
    model = build_classifier(mm_cfg.model)
    try:
        verify(checkpoint)
        load_checkpoint(model, str(checkpoint), map_location="cpu")
    except Exception as err:  # bytes changed since written, truncated, or a pickle that weights_only refuses to run
        raise StepError(f"{checkpoint}: the final checkpoint does not load ({type(err).__name__}: {err}); run the "
                        "same command again: training resumes from the newest good checkpoint") from None
    model = wrap_non_distributed_model(model, mm_cfg.device, device_ids=mm_cfg.gpu_ids)
    val_result = evaluate(model, mm_cfg.data.val, mm_cfg)[2]
    dataset, scores, test_result = evaluate(model, mm_cfg.data.test, mm_cfg)
    log.info("tested %s on %d test images: top-1 %.2f%% (validation split %.2f%%)", checkpoint, len(dataset),
             test_result["accuracy_top-1"], val_result["accuracy_top-1"])
    classes, gt, pred = list(dataset.CLASSES), dataset.get_gt_labels(), scores.argmax(axis=1)
    files = [info.get("filename") for info in dataset.data_infos]
    write_json_atomic(run_dir.predictions, {
        "classes": classes, "gt_label": gt.tolist(), "pred_label": pred.tolist(),
        "pred_score": [round(float(score), 6) for score in scores.max(axis=1)],
        **({"files": files} if all(files) else {}),
    })
    wrong = np.flatnonzero(pred != gt)
    report.plot_misclassified([dataset.data_infos[i]["img"] for i in wrong], [classes[i] for i in gt[wrong]],
                              [classes[i] for i in pred[wrong]], scores[wrong].max(axis=1), run_dir.misclassified)
    write_json_atomic(run_dir.val_result, val_result)
    write_json_atomic(run_dir.eval_result, test_result)
