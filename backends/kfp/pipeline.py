"""Build the Kubeflow pipeline: create-volume -> prepare-data -> train -> test -> produce-metrics.

One pod per step, all on one shared volume: a PVC made per run (mode=create), a claim made by
hand (mode=existing) or a KFP pipeline workspace (mode=workspace). On this machine (kfp.local)
the Kubernetes parts are left out: kfp.local cannot run CreatePVC and ignores Kubernetes settings.
"""
from kfp import dsl, kubernetes
from omegaconf import DictConfig

from backends.kfp.components import make_components
from mmclf.steps import STEPS

PIPELINE_NAME = "mmclf"


def volume_root(volume: DictConfig) -> str:
    """Where the shared volume is mounted in every step pod."""
    if volume.mode == "workspace":
        # The workspace's fixed mount path: dsl.WORKSPACE_PATH_PLACEHOLDER resolves to it. The
        # placeholder is only substituted in task constants, never inside a pipeline parameter,
        # and the driver mounts the workspace into every task whose parameters name this path.
        return dsl.constants.WORKSPACE_MOUNT_PATH
    return volume.mount_path


def pipeline_config(volume: DictConfig):
    """mode=workspace: a KFP (>= 2.15) run workspace sized and patched like the PVC mode=create makes."""
    if volume.mode != "workspace":
        return None
    patch = {"accessModes": list(volume.access_modes)}
    if volume.storage_class:
        patch["storageClassName"] = volume.storage_class
    return dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(
        size=volume.size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch)))


def _claim(volume: DictConfig):
    """(claim name or channel, create-volume task or None) for the PVC modes; (None, None) otherwise."""
    mode = volume.mode
    if mode == "existing":
        return volume.claim_name, None
    if mode != "create":
        return None, None
    options = {"storage_class_name": volume.storage_class} if volume.storage_class else {}
    create = kubernetes.CreatePVC(pvc_name_suffix=volume.pvc_name_suffix, access_modes=list(volume.access_modes),
                                  size=volume.size, **options)
    create.set_display_name("create-volume")
    create.set_caching_options(False)  # a cached create would hand back an old claim's name
    return create.outputs["name"], create


def _request_resources(task, resources: DictConfig) -> None:
    if resources.accelerator_count > 0:
        task.set_accelerator_type(resources.accelerator_type)
        task.set_accelerator_limit(resources.accelerator_count)
    if resources.cpu is not None:
        task.set_cpu_limit(str(resources.cpu))
    if resources.memory is not None:
        task.set_memory_limit(str(resources.memory))


def _on_cluster(task, step, backend: DictConfig, claim) -> None:
    """Kubernetes settings of one step task: volume mount, pull policy, timeout, resources.

    Only step tasks get them: KFP's driver does create-volume and delete-volume itself, in no pod.
    """
    if claim is not None:
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=backend.volume.mount_path)
    kubernetes.set_image_pull_policy(task, backend.image_pull_policy)
    if backend.timeout_s:
        kubernetes.set_timeout(task, backend.timeout_s)
    if step.accelerated:
        _request_resources(task, backend.resources)


def build_pipeline(backend: DictConfig, config_yaml: str, run_dir: str, on_cluster: bool = True):
    """The pipeline for ``backend`` (cfg.backend); its parameters default to ``config_yaml`` and ``run_dir``.

    ``on_cluster=False`` builds the kfp.local variant: the same step tasks in the same order,
    without the volume tasks and Kubernetes settings.
    """
    components = make_components(backend.component, backend.image)
    volume = backend.volume

    def mmclf(config_yaml: str = config_yaml, run_dir: str = run_dir):
        claim, previous = _claim(volume) if on_cluster else (None, None)
        for step in STEPS:
            task = components[step.name](config_yaml=config_yaml, run_dir=run_dir)
            # Every task reads or writes the shared volume, so caching is off: a cached train would
            # skip work that a new (empty) volume or run dir needs, and test would find no checkpoint.
            task.set_caching_options(False)
            if previous is not None:
                task.after(previous)
            if backend.retries > 0:
                task.set_retry(num_retries=backend.retries)
            if on_cluster:
                _on_cluster(task, step, backend, claim)
            previous = task
        if on_cluster and volume.mode == "create" and volume.delete_after:
            # Runs only when every step succeeded: after a failure the volume stays for inspection.
            delete = kubernetes.DeletePVC(pvc_name=claim).after(previous)
            delete.set_display_name("delete-volume")
            delete.set_caching_options(False)

    return dsl.pipeline(mmclf, name=PIPELINE_NAME, description="mmcls training: prepare-data -> train -> test "
                        "-> produce-metrics on a shared volume",
                        pipeline_config=pipeline_config(volume) if on_cluster else None)
