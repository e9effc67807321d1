"""The backend protocol: the only branch point between running locally and on Kubeflow."""
from pathlib import Path
from typing import Optional, Protocol

from omegaconf import DictConfig


class Backend(Protocol):
    def run(self, cfg: DictConfig, run_dir: Path) -> Optional[dict]:
        """Run prepare-data -> train -> test -> metrics for ``cfg``; return the metrics dict,
        or None when no run finished here (a pipeline compiled or submitted without waiting)."""
