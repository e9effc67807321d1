"""backend=kfp: the same steps as a Kubeflow pipeline, one pod per step on a shared volume.

mode=compile writes pipeline.yaml (+ a Mermaid picture of the task graph) into the run dir;
mode=submit also starts a run on a KFP API server (client.py), after the preflight when the cluster
can be asked; mode=check runs only the preflight (preflight.py); mode=local executes the pipeline on
this machine through kfp.local (kfp_local.py), producing the run-dir files backend=local does.

Only the light modules are imported here: compiling needs kfp, never torch, mmcv or mmcls; the
cluster is asked only where access is configured and the answer is needed.
"""
import datetime
import logging
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from backends.kfp.checks import NO_CLASS_FIX, check_backend, check_distributed, check_for_cluster
from backends.kfp.cluster.access import cluster_access
from backends.kfp.compiling.naming import run_names
from backends.kfp.kfp_mode import follow_kfp_mode
from backends.kfp.schema import KfpMode
from backends.kfp.serving.checks import check_serve
from backends.kfp.submitting.endpoint import host_from_config
from backends.kfp.submitting.run_record import read_run_record, remote_run
from backends.kfp.volume.layout import VolumeLayout
from mmclf.errors import ConfigError, ResultNotHere
from mmclf.reports import jobs
from mmclf.reports.jobs import JobContext
from mmclf.run.rundir import RunDir
from mmclf.validate import check_runs_here

log = logging.getLogger(__name__)


class KfpBackend:
    """Compile, submit, check or locally execute the pipeline built from ``cfg`` (backends/base.py: the contract)."""

    def check(self, cfg: DictConfig) -> None:
        check_backend(cfg.backend)
        check_distributed(cfg)
        check_serve(cfg)
        if cfg.backend.mode == KfpMode.local:  # trains on this machine
            check_runs_here(cfg)
        else:
            check_for_cluster(cfg)

    def returns_objective(self, cfg: DictConfig) -> bool:
        backend = cfg.backend
        return backend.mode == KfpMode.local or (backend.mode == KfpMode.submit and backend.wait)

    def remote_run(self, run_dir: RunDir) -> dict:
        return remote_run(run_dir)

    def records_job(self, cfg: DictConfig) -> bool:
        return cfg.backend.mode not in (KfpMode.check, KfpMode.clean)  # they run nothing

    def run(self, cfg: DictConfig, run_dir: RunDir, job: JobContext) -> Optional[dict]:
        """The metrics dict (mode=local, or submit with backend.wait), else None: no run finished here."""
        backend = cfg.backend
        check_backend(backend)
        check_distributed(cfg)
        check_serve(cfg)
        if backend.mode == KfpMode.local:
            from backends.kfp.kfp_local import run_local

            return run_local(cfg, run_dir)
        check_for_cluster(cfg)
        if backend.mode in (KfpMode.check, KfpMode.submit) and host_from_config(backend):
            follow_kfp_mode(cfg)  # a multi-user KFP: the profile's namespace and account
        cluster = _connect(backend) if cluster_access() and _asks_cluster(backend) else None
        if backend.mode == KfpMode.check:
            return _preflight(cfg, cluster)
        if backend.mode == KfpMode.clean:
            from backends.kfp.clean import clean

            return clean(cluster, backend, datetime.datetime.now(datetime.timezone.utc))
        metrics = _metrics_not_yet_read_back(cfg, run_dir)
        if metrics is not None:
            return metrics
        storage_class = _storage_class(backend, cluster)
        if backend.mode == KfpMode.submit:
            _refuse_unknown_class(backend, storage_class)
            if cluster is not None:
                from backends.kfp.preflight import report, run_checks

                report(run_checks(cfg, cluster, kfp_api=False), "nothing was compiled or submitted")
        return _compile_and_submit(cfg, run_dir, job, storage_class)


def _metrics_not_yet_read_back(cfg: DictConfig, run_dir: RunDir) -> Optional[dict]:
    """The metrics of the KFP run this job already submitted, which SUCCEEDED but whose metrics did not
    come back then (job.json: succeeded_without_metrics): read again, instead of training it again."""
    record, remote = jobs.read_record(run_dir), read_run_record(run_dir)
    if record.get("status") != ResultNotHere.job_status or remote.get("state") != "SUCCEEDED" or \
            not jobs.same_job(cfg, record):
        return None
    from backends.kfp.submitting.endpoint import target_from_config
    from backends.kfp.submitting.mlmd import read_metrics

    log.info("KFP run %s already SUCCEEDED: reading its metrics again, not submitting it again", remote["run_id"])
    target = target_from_config(run_dir.pipeline, cfg.backend)
    return read_metrics(target, remote["run_id"], f"{remote['run_dir']}/{RunDir.METRICS} on {remote['volume']}")


def _connect(backend: DictConfig):
    from backends.kfp.cluster.kube import connect  # the kubernetes client: only with a cluster to ask

    return connect(backend)


def _asks_cluster(backend: DictConfig) -> bool:
    """Whether this mode needs the cluster's word: the preflight, or the default class create-volume needs."""
    default_class_needed = backend.volume.mode == "create" and not backend.volume.storage_class
    return backend.mode in (KfpMode.check, KfpMode.submit, KfpMode.clean) or default_class_needed


def _preflight(cfg: DictConfig, cluster) -> None:
    from backends.kfp.preflight import report, run_checks

    report(run_checks(cfg, cluster), "fix them, then run backend.mode=check again")
    print(f"preflight: nothing found that would make a run stall ({cluster.name}, namespace {cluster.namespace})")


def _storage_class(backend: DictConfig, cluster) -> Optional[str]:
    """create-volume's class: the configured one, else the cluster's default; None when neither is known,
    which makes it a pipeline parameter (never KFP's driver default "standard", kubeflow/pipelines#11396)."""
    volume = backend.volume
    if volume.mode != "create" or volume.storage_class:
        return volume.storage_class
    if cluster is None:
        print("storage class: unknown here (no kubeconfig or in-cluster access to look up the cluster's default): "
              "the pipeline takes it as its parameter storage_class, to fill in at upload")
        return None
    from backends.kfp.cluster.kube import ClusterError, default_storage_class

    try:
        default = default_storage_class(cluster)
    except ClusterError as err:
        print(f"storage class: could not look up the cluster's default ({err}): the pipeline takes it as its "
              "parameter storage_class, to fill in at upload")
        return None
    if default is None:
        print(f"storage class: {cluster.name} has no default class: the pipeline takes it as its parameter "
              f"storage_class, to fill in at upload; or set {NO_CLASS_FIX}")
        return None
    print(f"storage class: {default.metadata.name}, the default class of {cluster.name} "
          "(backend.volume.storage_class names another)")
    return default.metadata.name


def _refuse_unknown_class(backend: DictConfig, storage_class: Optional[str]) -> None:
    if backend.volume.mode == "create" and not storage_class:
        raise ConfigError(f"backend.mode=submit: backend.volume.storage_class=null and the cluster's default class "
                          f"is not known here (see above); set {NO_CLASS_FIX}")


def _compile_and_submit(cfg: DictConfig, run_dir: RunDir, job: JobContext, storage_class: Optional[str]):
    from backends.kfp.compiling.compile import compile_pipeline, pod_config_yaml, print_how_to_run
    from backends.kfp.compiling.parameters import parameter_defaults
    from backends.kfp.pipeline import build_pipeline

    backend = cfg.backend
    name, display_name = run_names(cfg, job)
    layout = VolumeLayout.of(backend.volume)
    volume_run_dir = layout.run_dir(name)  # each KFP run writes in <this>-<its run id>
    defaults, config_yaml = parameter_defaults(cfg), pod_config_yaml(cfg, layout.data)
    compile_pipeline(build_pipeline(backend, config_yaml, volume_run_dir, defaults, storage_class), run_dir)
    if backend.distributed == "trainjob":  # what the train task will create, for review
        from backends.kfp.trainjob.manifest import write_review_manifest

        write_review_manifest(OmegaConf.create(config_yaml), volume_run_dir, run_dir)
    if backend.serve.enabled:  # what the serve task will create, for review
        from backends.kfp.serving import manifest as serving_manifest

        serving_manifest.write_review_manifest(OmegaConf.create(config_yaml), volume_run_dir, run_dir)
    if backend.mode == KfpMode.compile:
        class_needed = backend.volume.mode == "create" and not storage_class
        print_how_to_run(run_dir, backend.image, volume_run_dir, class_needed)
        return None
    from backends.kfp.submitting.client import submit

    if backend.experiment is None:  # all runs of a sweep go to one experiment named after it
        backend = OmegaConf.merge(backend, {"experiment": job.experiment})
    return submit(run_dir.pipeline, backend, display_name, {**defaults, "config_yaml": config_yaml}, volume_run_dir)
