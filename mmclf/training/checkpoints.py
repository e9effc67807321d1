"""Checkpoints that survive kills, full disks and volumes without symlinks, loaded safely.

- ``SafeEpochBasedRunner``: mmcv's EpochBasedRunner, but each checkpoint is written to a temp
  file and renamed, so a killed process leaves the old file or the new one; ``latest.pth`` is a
  symlink where the volume allows one and an atomic copy where it does not. It skips mmcv's idle
  pauses at the end of a run and at each epoch start, unless DataLoader workers that are not persistent
  are released between epochs (``NoIdlePause``).
- mmcv's local checkpoint loader is replaced by one that passes ``weights_only=True`` to
  ``torch.load`` explicitly: a checkpoint cannot run code when it is opened.
- Each checkpoint's sha256 is recorded beside it (``epoch_N.pth.sha256``) when it is written and
  checked before it is resumed or tested: damage that leaves a file loadable (bytes overwritten
  in place) is caught, not trained on.
- ``resume_checkpoint`` picks the newest checkpoint that verifies and loads, skipping damaged ones.
"""
import functools
import hashlib
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from mmcv.runner import RUNNERS, EpochBasedRunner, get_host_info
from mmcv.runner.checkpoint import CheckpointLoader

from mmclf.errors import ConfigError, MMClfError, RunDirRefused, StepFailed
from mmclf.run.io import write_text_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pth$")


class CheckpointWriteError(StepFailed):
    """A checkpoint could not be written (for example, the disk is full)."""


class DamagedCheckpoint(MMClfError):
    """A checkpoint's bytes are not the ones written: they differ from its recorded sha256."""


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def record_hash(written: Path, checkpoint: Path) -> None:
    """Record the sha256 of ``written`` (the complete temp file) as ``checkpoint``'s, before it is renamed
    there: every checkpoint this runner puts in place has its hash already, whenever a kill comes."""
    write_text_atomic(RunDir.checkpoint_hash(checkpoint), f"{sha256_of(written)}  {checkpoint.name}\n")


def verify(checkpoint: Path) -> None:
    """Raise DamagedCheckpoint if ``checkpoint`` differs from its recorded sha256.

    A checkpoint without a hash was written before hashes were recorded (this runner writes the
    hash first, so no kill leaves one of its own without): it is trusted as far as it loads, as it
    was then, rather than refused, which would strand every run dir of an earlier version."""
    recorded = RunDir.checkpoint_hash(checkpoint)
    if recorded.is_file() and recorded.read_text().split()[:1] != [sha256_of(checkpoint)]:
        raise DamagedCheckpoint(f"its bytes differ from the sha256 recorded in {recorded.name} when it was written")


def remove_orphan_hashes(work_dir: Path) -> None:
    """Remove the hashes of checkpoints that are gone: pruned (by mmcv's CheckpointHook too), or never
    renamed into place because a kill came between the two."""
    for recorded in work_dir.glob(f"epoch_*.pth{RunDir.CHECKPOINT_HASH}"):
        if not recorded.with_suffix("").exists():
            recorded.unlink()


@CheckpointLoader.register_scheme(prefixes="", force=True)
def load_from_local_weights_only(filename, map_location=None):
    """mmcv's local loader with ``weights_only=True`` spelled out (tensors and plain data only)."""
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return torch.load(filename, map_location=map_location, weights_only=True)


def _point_latest_at(out_dir: Path, filename: str) -> None:
    tmp = out_dir / f".{RunDir.LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.symlink(filename, tmp)
    except OSError:  # volumes without symlinks (some NFS/SMB/object-store mounts)
        shutil.copyfile(out_dir / filename, tmp)
    os.replace(tmp, out_dir / RunDir.LATEST)


class NoIdlePause:
    """Mixin: mmcv's ``EpochBasedRunner`` loop without two of its idle pauses: the 1-second sleep before
    the ``after_run`` hooks always, and the 2-second one at each training epoch's start unless the data
    loader's workers are released at every epoch's end (DataLoader workers that are not persistent).

    mmcv sleeps at the end of ``run`` to "wait for some hooks like loggers to finish", but its logger
    hooks write synchronously and ``after_run`` (where they flush and close) follows at once. It pauses
    at each epoch start against a deadlock its authors could not reproduce, put down to the previous
    epoch's workers being released late (open-mmlab/mmcv#306, #1912): with no workers
    (``workers_per_gpu=0``, the device loader) or persistent ones (kept from epoch to epoch) none are
    released. On small epochs the pauses are a large share of a run. The loops are mmcv's otherwise
    (a ``val`` stage of ``runtime.workflow`` keeps its pause: mmclf validates through EvalHook).
    """

    def run(self, data_loaders, workflow, max_epochs=None, **kwargs):
        assert len(data_loaders) == len(workflow), "one data loader per workflow stage, as mmcv asserts"
        if max_epochs is not None:
            self._max_epochs = max_epochs
        modes = [mode for mode, _ in workflow]
        self._max_iters = self._max_epochs * len(data_loaders[modes.index("train")])
        self.logger.info("Start running, host: %s, work_dir: %s", get_host_info(), self.work_dir)
        self.logger.info("Hooks will be executed in the following order:\n%s", self.get_hook_info())
        self.logger.info("workflow: %s, max: %d epochs", workflow, self._max_epochs)
        self.call_hook("before_run")
        while self.epoch < self._max_epochs:
            for data_loader, (mode, epochs) in zip(data_loaders, workflow, strict=True):
                for _ in range(epochs):
                    if mode == "train" and self.epoch >= self._max_epochs:
                        break
                    getattr(self, mode)(data_loader, **kwargs)
        self.call_hook("after_run")

    def train(self, data_loader, **kwargs):
        if getattr(data_loader, "num_workers", 0) > 0 and not getattr(data_loader, "persistent_workers", False):
            return super().train(data_loader, **kwargs)
        self.model.train()
        self.mode = "train"
        self.data_loader = data_loader
        self._max_iters = self._max_epochs * len(self.data_loader)
        self.call_hook("before_train_epoch")
        for i, data_batch in enumerate(self.data_loader):
            self.data_batch = data_batch
            self._inner_iter = i
            self.call_hook("before_train_iter")
            self.run_iter(data_batch, train_mode=True, **kwargs)
            self.call_hook("after_train_iter")
            del self.data_batch
            self._iter += 1
        self.call_hook("after_train_epoch")
        self._epoch += 1


@RUNNERS.register_module()
class SafeEpochBasedRunner(NoIdlePause, EpochBasedRunner):
    """EpochBasedRunner whose checkpoints are written atomically (and fewer idle pauses: ``NoIdlePause``)."""

    def save_checkpoint(self, out_dir, filename_tmpl="epoch_{}.pth", save_optimizer=True, meta=None,
                        create_symlink=True):
        out_dir = Path(out_dir)
        filename = filename_tmpl.format(self.epoch + 1)
        tmp_name = f".{filename}.tmp"
        try:
            super().save_checkpoint(str(out_dir), tmp_name, save_optimizer, meta, create_symlink=False)
            record_hash(out_dir / tmp_name, out_dir / filename)
        except Exception as err:
            (out_dir / tmp_name).unlink(missing_ok=True)
            previous = epoch_checkpoints(out_dir)
            kept = f"the previous checkpoint {previous[0][1].name} is intact" if previous else "no earlier checkpoint"
            raise CheckpointWriteError(
                f"writing checkpoint {out_dir / filename} failed ({type(err).__name__}: {err}); {kept}. "
                "Free space on that volume (or lower runtime.checkpoint_config.max_keep_ckpts) and run "
                "again to resume.") from None
        os.replace(out_dir / tmp_name, out_dir / filename)
        if create_symlink:
            _point_latest_at(out_dir, filename)

    def run(self, data_loaders, workflow, max_epochs=None, **kwargs):
        super().run(data_loaders, workflow, max_epochs, **kwargs)
        if self.rank == 0:  # the rank that saves: mmcv's CheckpointHook pruned checkpoints, not their hashes
            remove_orphan_hashes(Path(self.work_dir))


def tidy_work_dir(work_dir: Path, resume_from, max_keep: int) -> None:
    """Undo what a kill can leave: temp files of unfinished writes (and of distributed evaluation),
    ``latest.pth`` not yet moved to the newest checkpoint, more checkpoints than ``max_keep`` (mmcv
    prunes only after a save, which a finished run never makes again). Run by rank 0 of the one
    command holding the run dir's lock."""
    for tmp in work_dir.glob(".*.tmp"):
        tmp.unlink()
    # mmcls's DistEvalHook gathers the ranks' results there and removes it when done: a kill leaves it
    shutil.rmtree(work_dir / ".eval_hook", ignore_errors=True)
    if resume_from is not None and resume_from.parent == work_dir:
        _point_latest_at(work_dir, resume_from.name)
    if max_keep > 0:
        for _, path in epoch_checkpoints(work_dir)[max_keep:]:
            if path != resume_from:
                path.unlink()
    remove_orphan_hashes(work_dir)


def epoch_checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    """``epoch_N.pth`` files in ``work_dir``, newest epoch first."""
    found = [(int(m.group(1)), p) for p in work_dir.glob("epoch_*.pth") if (m := _EPOCH_FILE.match(p.name))]
    return sorted(found, reverse=True)


@functools.cache  # the preflight, the finished-run check and the resume each look at it: said once
def _report_damaged(path: Path, reason: str) -> None:
    log.warning("skipping damaged checkpoint %s (%s)", path, reason)


def checkpoint_meta(path: Path):
    """The ``meta`` dict of a complete mmcv checkpoint that verifies, or None (with a warning) if it is damaged."""
    try:
        verify(path)
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        _report_damaged(path, f"{type(err).__name__}: {err}")
        return None
    if "state_dict" in checkpoint and "epoch" in checkpoint.get("meta", {}):
        return checkpoint["meta"]
    _report_damaged(path, "no state_dict or epoch in it")
    return None


def _check_recipe(path: Path, meta: dict, weights: str, world_size: int, key: str) -> None:
    error = ConfigError if key == "resume" else RunDirRefused
    if meta.get("weights_fingerprint") != weights:
        raise error(f"{key}: {path} was trained with another model, data, schedule or seed; "
                    + ("pass a checkpoint of this recipe, or resume=auto" if key == "resume" else
                       "run into a new hydra.run.dir, or pass resume=never to train from scratch over it"))
    # Checkpoints from before data-parallel training have no world_size: they were trained on one process.
    trained_on = meta.get("world_size", 1)
    if trained_on != world_size:
        # An epoch is world-size times fewer iterations: mmcv's iteration count, and with it every
        # iteration-based schedule (warmup, one-cycle), would not match the epochs left.
        raise error(f"{key}: {path} was trained on {trained_on} process(es), this run has {world_size}, and the "
                    f"schedule's iterations would not match; train on {trained_on} (dist.nproc_per_node x dist.nnodes),"
                    " or pass resume=never to start again")


def resume_checkpoint(resume: str, work_dir: Path, weights: str, max_epochs: int, world_size: int = 1):
    """The checkpoint to resume from: ``auto`` = newest one in ``work_dir`` that verifies and loads
    (or None), ``never`` = None, anything else = that path, which must load.

    ``weights`` fingerprints the recipe being trained (config.weights_fingerprint): mmcv resumes
    non-strictly, so a checkpoint of another model would load half its weights without a word,
    and one of another schedule or seed would pass off its result as this config's. Such a
    checkpoint is refused instead of being trained over, whether found in the run dir or named;
    so is one trained on another ``world_size`` (number of processes)."""
    if resume == "never":
        return None
    if resume != "auto":
        meta = checkpoint_meta(Path(resume)) if Path(resume).is_file() else None
        if meta is None:
            raise ConfigError(f"resume={resume}: not a loadable mmcv checkpoint; use resume=auto, never or a .pth path")
        _check_recipe(Path(resume), meta, weights, world_size, "resume")
        return Path(resume)
    checkpoints = epoch_checkpoints(work_dir)
    good = next(((path, meta) for _, path in checkpoints if (meta := checkpoint_meta(path)) is not None), None)
    if good is not None:
        _check_recipe(*good, weights, world_size, "hydra.run.dir")
    if checkpoints and checkpoints[0][0] > max_epochs:
        _refuse_fewer_epochs(*checkpoints[0], max_epochs)
    return good[0] if good else None


def _refuse_fewer_epochs(epoch: int, path: Path, max_epochs: int) -> None:
    """A run dir trained past ``max_epochs`` (damaged or not, that checkpoint says how far it got) holds a
    longer run: resuming an earlier epoch would test it and replace that run's results with a shorter one's."""
    raise RunDirRefused(f"hydra.run.dir: {path} is epoch {epoch}, past schedule.runner.max_epochs={max_epochs}: this "
                        "run dir holds a longer run, whose results fewer epochs would replace; run into a new "
                        f"hydra.run.dir, set schedule.runner.max_epochs={epoch} or more to resume it, or pass "
                        "resume=never to train from scratch over it")
