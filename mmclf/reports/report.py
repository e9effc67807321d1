"""Human-readable outputs of a run: confusion-matrix and training-curve PNGs, report.md."""
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: pods and CI have no display
import matplotlib.pyplot as plt  # noqa: E402

from mmclf.reports.jobs import shown  # noqa: E402
from mmclf.run.io import write_figure_atomic, write_text_atomic  # noqa: E402
from mmclf.run.rundir import RunDir  # noqa: E402


def _save(fig, path: Path) -> None:
    write_figure_atomic(fig, path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def plot_confusion_matrix(confusion: dict, path: Path) -> None:
    classes, matrix = confusion["classes"], confusion["matrix"]
    size = 2 + 0.5 * len(classes)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xlabel="predicted", ylabel="true",
           title="Confusion matrix (test)")
    ax.set_xticklabels(classes, rotation=45, ha="right")
    ax.set_yticklabels(classes)
    for row, counts in enumerate(matrix):
        for col, count in enumerate(counts):
            ax.text(col, row, count, ha="center", va="center", fontsize=8)
    _save(fig, path)


GALLERY_SIZE = 16  # misclassified test images shown


def plot_misclassified(images: list, true: list[str], predicted: list[str], scores, path: Path) -> None:
    """A gallery of (up to GALLERY_SIZE) misclassified images, each titled with its true and predicted
    class and the score of the prediction; the most confident mistakes first. No mistakes: no file."""
    if not images:
        path.unlink(missing_ok=True)  # no stale gallery from an earlier run
        return
    order = sorted(range(len(images)), key=lambda i: -scores[i])[:GALLERY_SIZE]
    columns = min(4, len(order))
    rows = -(-len(order) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order, strict=False):
        ax.imshow(images[i], interpolation="nearest")
        ax.set_title(f"true: {true[i]}\npred: {predicted[i]} ({100 * scores[i]:.0f}%)", fontsize=8)
    fig.suptitle(f"Misclassified test images ({len(order)} of {len(images)})")
    _save(fig, path)


def read_log(work_dir: Path, mode: str = "train") -> list[dict]:
    """Entries of ``mode`` (train: loss and lr per logged iteration; val: accuracy per evaluated
    epoch) from every mmcv ``<time>.log.json`` in ``work_dir``, oldest first: a resumed run
    continues in a new log. An entry logged twice (trained, killed, trained again) keeps its last."""
    key = "loss" if mode == "train" else "accuracy_top-1"
    by_step = {}
    for log_file in sorted(work_dir.glob("*.log.json")):  # named by start time: sorting is chronological
        for line in log_file.read_text().splitlines():
            entry = json.loads(line) if line.strip() else {}
            if entry.get("mode") == mode and key in entry:
                by_step[(entry["epoch"], entry["iter"])] = entry
    return [by_step[step] for step in sorted(by_step)]


def plot_training_curve(work_dir: Path, path: Path) -> bool:
    """Train loss, validation top-1 (when evaluated) and learning rate against epoch; False when
    the log has no training entries."""
    entries, val = read_log(work_dir, "train"), read_log(work_dir, "val")
    if not entries:
        path.unlink(missing_ok=True)  # no stale curve from an earlier run beside this run's report
        return False
    iters_per_epoch = max(e["iter"] for e in entries)
    x = [e["epoch"] - 1 + e["iter"] / iters_per_epoch for e in entries]
    fig, axes = plt.subplots(3 if val else 2, 1, figsize=(7, 7 if val else 5), sharex=True)
    axes[0].plot(x, [e["loss"] for e in entries])
    axes[0].set(ylabel="train loss", title="Training curve")
    if val:  # mmcv logs a val entry with the epoch that was just trained
        axes[1].plot([e["epoch"] for e in val], [e["accuracy_top-1"] for e in val], marker="o")
        axes[1].set(ylabel="val top-1 (%)")
    axes[-1].plot(x, [e["lr"] for e in entries])
    axes[-1].set(xlabel="epoch", ylabel="learning rate")
    _save(fig, path)
    return True


def write_report(result: dict, run_dir: RunDir, has_curve: bool) -> None:
    scalars = {k: v for k, v in result.items() if isinstance(v, (int, float))}
    lines = ["# mmclf run report", "", "Validation figures (val_*) are what sweeps optimise; test figures (test_*) are "
             "only reported.", "", "| metric | value |", "|---|---|"]
    lines += [f"| {key} | {shown(value)} |" for key, value in scalars.items()]
    lines += ["", "## Per-class accuracy (%)", "", "| class | accuracy |", "|---|---|"]
    lines += [f"| {name} | {acc:.2f} |" for name, acc in result["per_class_accuracy"].items()]
    lines += ["", f"![confusion matrix]({RunDir.CONFUSION_MATRIX})"]
    if run_dir.misclassified.is_file():
        lines += ["", f"![misclassified test images]({RunDir.MISCLASSIFIED})"]
    if has_curve:
        lines += ["", f"![training curve]({RunDir.TRAINING_CURVE})"]
    write_text_atomic(run_dir.report, "\n".join(lines) + "\n")
