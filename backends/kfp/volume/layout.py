"""The shared volume's layout, in one place (as RunDir is the run dir's): what every pod finds where.

    <root>/                       where each pod mounts the volume (backend.volume.mount_path, or
                                  KFP's workspace path with backend.volume.mode=workspace)
    <root>/runs/<name>-<run id>/  one KFP run's folder: a run dir (RunDir), fresh for every KFP run
    <root>/data/                  datasets, shared by runs: a relative data.root is a folder here, and
                                  its caches (decoded images, pretrained checkpoints) sit beside it

Imported by the pods too (pod.py, the volume-permissions task): no kfp here.
"""
from dataclasses import dataclass

from omegaconf import DictConfig

# Where KFP mounts a pipeline workspace in every task that names it: kfp.dsl.constants.WORKSPACE_MOUNT_PATH.
WORKSPACE_MOUNT_PATH = "/kfp-workspace"


@dataclass(frozen=True)
class VolumeLayout:
    """The shared volume mounted at ``root``."""

    root: str
    RUNS, DATA = "runs", "data"

    @classmethod
    def of(cls, volume: DictConfig) -> "VolumeLayout":
        """The volume as the step pods mount it (``backend.volume``)."""
        return cls(WORKSPACE_MOUNT_PATH if volume.mode == "workspace" else volume.mount_path.rstrip("/"))

    @property
    def runs(self) -> str:
        return f"{self.root}/{self.RUNS}"

    @property
    def data(self) -> str:
        return f"{self.root}/{self.DATA}"

    def run_dir(self, name: str) -> str:
        """A job's run dir: each KFP run of it writes in ``run_folder(<this>, <its run id>)``."""
        return f"{self.runs}/{name}"

    @property
    def folders(self) -> tuple[str, str, str]:
        """The folders the steps write into, which the volume-permissions task makes writable for them."""
        return self.root, self.runs, self.data


def claim_access_modes(backend: DictConfig) -> list[str]:
    """The access modes of the claim a run makes (``backend.volume.access_modes``; null: what the run needs).

    A pod-per-step pipeline mounts the volume in one pod at a time: ReadWriteOnce, which every storage
    class can make (the volume follows the pod from node to node; a node-local volume brings the pods
    to its node). A TrainJob's nodes mount it at once, from different machines: ReadWriteMany."""
    if backend.volume.access_modes is not None:
        return list(backend.volume.access_modes)
    return ["ReadWriteMany"] if backend.distributed == "trainjob" else ["ReadWriteOnce"]


def run_folder(run_dir: str, run_id: str) -> str:
    """The folder a run writes: ``<run_dir>-<KFP run id>`` on a cluster, so that every KFP run (a
    re-run or clone from the UI too) gets a fresh one; ``run_dir`` itself when there is no run id
    (kfp.local runs in the Hydra run dir)."""
    return f"{run_dir}-{run_id}" if run_id else run_dir
