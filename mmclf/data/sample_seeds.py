"""Each sample's augmentation drawn from (seed, epoch, sample index), whichever process draws it.

mmcls's transforms draw from Python's ``random`` and numpy's global generator (a custom transform
may draw from torch's). DataLoader workers have streams of their own, seeded per worker, and
persistent workers carry theirs across epochs: the draws then depend on the worker count, and a
resumed run draws other ones. Seeding the generators from the epoch's seed and the sample's index
right before the pipeline runs makes every draw the same in any worker, or in none.
"""
import contextlib
import random

import numpy as np
import torch
from torch.utils.data import get_worker_info


def sample_seeds(epoch_seed: int, index: int) -> np.ndarray:
    """Three 32-bit seeds (Python's, numpy's and torch's generators) for sample ``index`` (a global
    dataset index: the same on every rank of a distributed run) in the epoch seeded ``epoch_seed``."""
    return np.random.SeedSequence(epoch_seed, spawn_key=(index,)).generate_state(3)


@contextlib.contextmanager
def seeded_draws(seeds: np.ndarray):
    """Python's, numpy's and torch's CPU generators seeded with ``seeds`` for the draws inside.

    In the main process (no DataLoader workers) their states are put back afterwards, so the
    training loop draws what it draws with workers (mixup, dropout); in a worker nothing else
    draws, and restoring numpy's state would cost 70 µs a sample."""
    saved = _states() if get_worker_info() is None else None
    random.seed(int(seeds[0]))
    np.random.seed(seeds[1])
    torch.default_generator.manual_seed(int(seeds[2]))  # not torch.manual_seed: it seeds every device (0.1 ms)
    try:
        yield
    finally:
        if saved is not None:
            _restore(saved)


def _states() -> tuple:
    return random.getstate(), np.random.get_state(), torch.default_generator.get_state()


def _restore(states: tuple) -> None:
    python, numpy, torch_cpu = states
    random.setstate(python)
    np.random.set_state(numpy)
    torch.default_generator.set_state(torch_cpu)


class SeededSamples:
    """Dataset mixin (before mmcls's dataset class): each sample's pipeline runs under
    :func:`seeded_draws` for its index and the epoch's seed, which :meth:`set_epoch_seed` sets.

    The seed lives in shared memory, allocated here, before any DataLoader worker starts: a
    persistent worker holds the copy of the dataset made when it started, and reads there the
    seed the main process sets at each epoch start (before the epoch's indices reach it)."""

    def __init__(self, *args, **kwargs):
        self._epoch_seed = torch.zeros((), dtype=torch.int64).share_memory_()
        super().__init__(*args, **kwargs)

    def set_epoch_seed(self, seed: int) -> None:
        self._epoch_seed.fill_(seed)

    def prepare_data(self, idx):
        with seeded_draws(sample_seeds(int(self._epoch_seed), idx)):
            return super().prepare_data(idx)
