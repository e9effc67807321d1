"""backend=kfp: the same steps as a Kubeflow pipeline, one pod per step on a shared volume.

mode=compile writes pipeline.yaml (+ a Mermaid picture of the task graph) into the run dir;
mode=submit also starts a run on a KFP API server (client.py); mode=local executes the pipeline
on this machine through kfp.local (local_run.py), producing the run-dir files backend=local does.

Only the light modules are imported here: compiling needs kfp, never torch, mmcv or mmcls.
"""
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from backends.kfp.checks import check_backend
from backends.kfp.naming import run_names, sweep_experiment
from backends.kfp.record import remote_run
from backends.kfp.schema import KfpMode
from mmclf.jobs import JobContext
from mmclf.rundir import RunDir
from mmclf.validate import check_runs_here


class KfpBackend:
    """Compile, submit or locally execute the pipeline built from ``cfg`` (backends/base.py: the contract)."""

    def check(self, cfg: DictConfig) -> None:
        check_backend(cfg.backend)
        if cfg.backend.mode == KfpMode.local:  # trains on this machine
            check_runs_here(cfg)

    def returns_objective(self, cfg: DictConfig) -> bool:
        backend = cfg.backend
        return backend.mode == KfpMode.local or (backend.mode == KfpMode.submit and backend.wait)

    def remote_run(self, run_dir: RunDir) -> dict:
        return remote_run(run_dir)

    def run(self, cfg: DictConfig, run_dir: RunDir, job: JobContext) -> Optional[dict]:
        """The metrics dict (mode=local, or submit with backend.wait), else None: no run finished here."""
        backend = cfg.backend
        check_backend(backend)
        if backend.mode == KfpMode.local:
            from backends.kfp.local_run import run_local

            return run_local(cfg, run_dir)
        from backends.kfp.compile import compile_pipeline, pod_config_yaml, print_how_to_run
        from backends.kfp.pipeline import build_pipeline, volume_root

        name, display_name = run_names(cfg, job)
        root = volume_root(backend.volume)
        arguments = {"config_yaml": pod_config_yaml(cfg, f"{root}/data"), "run_dir": f"{root}/runs/{name}"}
        compile_pipeline(build_pipeline(backend, **arguments), run_dir)
        if backend.mode == KfpMode.compile:
            print_how_to_run(run_dir, backend.image)
            return None
        from backends.kfp.client import submit

        if backend.experiment is None:  # all runs of a sweep go to one experiment named after it
            backend = OmegaConf.merge(backend, {"experiment": sweep_experiment(job)})
        return submit(run_dir.pipeline, backend, display_name, arguments)
