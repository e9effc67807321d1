"""Build the Kubeflow pipeline: create-volume -> volume-permissions -> prepare-data -> train -> test ->
export -> produce-metrics (-> serve) (-> delete-volume).

One pod per step, all on one shared volume: a PVC made per run (mode=create), a claim made by hand
(mode=existing) or a KFP pipeline workspace (mode=workspace). Every step writes in its own KFP run's
folder, ``<run dir>-<run id>``, so a re-run or clone from the UI never finds an old run's files.
On this machine (kfp.local) the Kubernetes parts are left out: kfp.local cannot run CreatePVC and
ignores Kubernetes settings.

The pipeline's parameters (shown and editable in the KFP UI): the typed run parameters
(parameters.py), the config, and ``storage_class`` when create-volume's class was not known when
compiling: KFP's driver would otherwise write storageClassName "standard" into the claim
(kubeflow/pipelines#11396), which most clusters do not have.
"""
import inspect
from typing import Optional

from kfp import dsl, kubernetes
from omegaconf import DictConfig

from backends.kfp.compiling.naming import STORAGE_CLASS_PARAMETER
from backends.kfp.compiling.parameters import RUN_PARAMETERS
from backends.kfp.components import clean_up_component, make_components, serve_component, volume_permissions_component
from backends.kfp.volume.layout import VolumeLayout, claim_access_modes
from mmclf.steps import STEPS

PIPELINE_NAME = "mmclf"


def pipeline_config(backend: DictConfig):
    """mode=workspace: a KFP (>= 2.15) run workspace sized and patched like the PVC mode=create makes.

    Without a class the workspace claim names none, and Kubernetes gives it the default class."""
    volume = backend.volume
    if volume.mode != "workspace":
        return None
    patch = {"accessModes": claim_access_modes(backend)}
    if volume.storage_class:
        patch["storageClassName"] = volume.storage_class
    return dsl.PipelineConfig(workspace=dsl.WorkspaceConfig(
        size=volume.size, kubernetes=dsl.KubernetesWorkspaceConfig(pvcSpecPatch=patch)))


def _claim(backend: DictConfig, storage_class):
    """(claim name or channel, create-volume task or None) for the PVC modes; (None, None) otherwise."""
    volume, mode = backend.volume, backend.volume.mode
    if mode == "existing":
        return volume.claim_name, None
    if mode != "create":
        return None, None
    create = kubernetes.CreatePVC(pvc_name_suffix=volume.pvc_name_suffix, access_modes=claim_access_modes(backend),
                                  size=volume.size, storage_class_name=storage_class)
    create.set_display_name("create-volume")
    create.set_caching_options(False)  # a cached create would hand back an old claim's name
    return create.outputs["name"], create


def _request_resources(task, resources: DictConfig, accelerators: int) -> None:
    if accelerators > 0:
        task.set_accelerator_type(resources.accelerator_type)
        task.set_accelerator_limit(accelerators)
    if resources.cpu is not None:
        task.set_cpu_limit(str(resources.cpu))
    if resources.memory is not None:
        task.set_memory_limit(str(resources.memory))


def _accelerated(task, resources: DictConfig, distributed: bool) -> None:
    """What a pod that trains or evaluates gets: the accelerators (all for the step that runs on
    dist's processes, one for the test step, which runs on one), CPU and memory, and a memory-backed
    /dev/shm (DataLoader workers and NCCL pass tensors through shared memory; a container's own is 64Mi).
    Its size counts against the pod's memory limit, where one is set."""
    _request_resources(task, resources, resources.accelerator_count if distributed else
                       min(resources.accelerator_count, 1))
    if resources.shm_size:
        kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory",
                                   size_limit=str(resources.shm_size))


def _on_cluster(task, backend: DictConfig, claim) -> None:
    """Kubernetes settings every task pod gets: volume mount, image pull, scheduling, pod metadata, timeout.

    KFP's driver does create-volume and delete-volume itself, in no pod: they get none."""
    if claim is not None:
        kubernetes.mount_pvc(task, pvc_name=claim, mount_path=backend.volume.mount_path)
    kubernetes.set_image_pull_policy(task, backend.image_pull_policy)
    if backend.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(backend.image_pull_secrets))
    for key, value in backend.node_selector.items():
        kubernetes.add_node_selector(task, key, value)
    for toleration in backend.tolerations:
        kubernetes.add_toleration(task, key=toleration.key, operator=toleration.operator, value=toleration.value,
                                  effect=toleration.effect, toleration_seconds=toleration.tolerationSeconds)
    for key, value in backend.pod_labels.items():
        kubernetes.add_pod_label(task, key, value)
    for key, value in backend.pod_annotations.items():
        kubernetes.add_pod_annotation(task, key, value)
    if backend.timeout_s:
        kubernetes.set_timeout(task, backend.timeout_s)


def _volume_permissions(backend: DictConfig, claim):
    """The first task on the volume: as root, make its root writable for the step pods' user (volume/permissions.py)."""
    task = volume_permissions_component(backend.image)(
        mount_path=VolumeLayout.of(backend.volume).root, uid=backend.run_as_user, gid=backend.run_as_group)
    task.set_caching_options(False)
    _on_cluster(task, backend, claim)
    kubernetes.set_security_context(task, run_as_user=0, run_as_group=0)
    return task


def _serve(backend: DictConfig, config_yaml: str, run_dir: str, run_id, claim):
    """The serve task (serve_task.py): a step pod's settings, no accelerator; it reads the run's folder and
    names the claim in the InferenceService's storage."""
    task = serve_component(backend.component, backend.image)(config_yaml=config_yaml, run_dir=run_dir,
                                                              run_id=run_id, claim_name=claim)
    task.set_caching_options(False)  # a cached task would create nothing
    if backend.retries > 0:
        task.set_retry(num_retries=backend.retries)
    _on_cluster(task, backend, claim)
    kubernetes.set_security_context(task, run_as_user=backend.run_as_user, run_as_group=backend.run_as_group,
                                    run_as_non_root=True)
    return task


def _clean_up(backend: DictConfig, config_yaml: str, run_id):
    """The exit handler's task (cleanup_task.py): a pod with the step pods' settings but no volume."""
    task = clean_up_component(backend.component, backend.image)(config_yaml=config_yaml, run_id=run_id)
    task.set_caching_options(False)
    task.set_display_name("clean-up")
    _on_cluster(task, backend, None)
    kubernetes.set_security_context(task, run_as_user=backend.run_as_user, run_as_group=backend.run_as_group,
                                    run_as_non_root=True)
    return task


def _signature(config_yaml: str, defaults: dict, class_needed: bool) -> inspect.Signature:
    """The pipeline function's typed parameters: KFP reads the pipeline's inputs from its signature."""
    def parameter(name, annotation, default=inspect.Parameter.empty):
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)

    # No default for the class: the KFP UI asks for it at upload.
    parameters = [parameter(STORAGE_CLASS_PARAMETER, str)] if class_needed else []
    parameters += [parameter(p.name, p.type, defaults[p.name]) for p in RUN_PARAMETERS]
    return inspect.Signature([*parameters, parameter("config_yaml", str, config_yaml)])


def _docstring(class_needed: bool) -> str:
    """The pipeline's description and, under Args, each parameter's: the KFP UI shows them."""
    lines = [f"    {p.name}: {p.description} (overrides {p.key})" for p in RUN_PARAMETERS]
    if class_needed:
        lines.insert(0, f"    {STORAGE_CLASS_PARAMETER}: the StorageClass of the run's volume (kubectl get "
                        "storageclass); a TrainJob's nodes need it to make ReadWriteMany volumes")
    lines.append("    config_yaml: the resolved mmclf config, as JSON (the parameters above override it)")
    summary = "mmcls training: prepare-data -> train -> test -> export -> produce-metrics on a shared volume."
    return f"{summary}\n\nArgs:\n" + "\n".join(lines) + "\n"


def build_pipeline(backend: DictConfig, config_yaml: str, run_dir: str, defaults: dict,
                   storage_class: Optional[str] = None, on_cluster: bool = True):
    """The pipeline for ``backend`` (cfg.backend): its steps write in ``<run_dir>-<KFP run id>``, and its
    parameters default to ``defaults`` (parameters.parameter_defaults) and ``config_yaml``.

    mode=create names ``storage_class`` for its claim; None makes it a pipeline parameter to fill in.
    ``on_cluster=False`` builds the kfp.local variant: the same step tasks in the same order, writing in
    ``run_dir`` itself, without the volume tasks and Kubernetes settings.
    """
    components = make_components(backend.component, backend.image)
    volume = backend.volume
    class_needed = on_cluster and volume.mode == "create" and not storage_class
    signature = _signature(config_yaml, defaults, class_needed)

    def mmclf(*values):
        inputs = dict(zip(signature.parameters, values, strict=True))
        # On a cluster the driver replaces a task input that is exactly this placeholder by the run's id.
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER if on_cluster else ""
        if on_cluster and backend.distributed == "trainjob":  # the TrainJob goes however the run ends
            with dsl.ExitHandler(_clean_up(backend, inputs["config_yaml"], run_id), name="run"):
                tasks(inputs, run_id)
        else:
            tasks(inputs, run_id)

    def tasks(inputs: dict, run_id):
        storage_class_input = inputs.pop(STORAGE_CLASS_PARAMETER, storage_class)
        claim, previous = _claim(backend, storage_class_input) if on_cluster else (None, None)
        if on_cluster and volume.make_writable:
            permissions = _volume_permissions(backend, claim)
            if previous is not None:
                permissions.after(previous)
            previous = permissions
        for step in STEPS:
            # With a TrainJob, the train task only creates it and waits: it needs the claim's name to give
            # the nodes, and no accelerator of its own (the nodes request theirs).
            launches = on_cluster and step.name == "train" and backend.distributed == "trainjob"
            extra = {"claim_name": claim} if launches else {}
            task = components[step.name](run_dir=run_dir, run_id=run_id, **inputs, **extra)
            # Every task reads or writes the shared volume, so caching is off: a cached train would
            # skip work that a new (empty) volume or run dir needs, and test would find no checkpoint.
            task.set_caching_options(False)
            if previous is not None:
                task.after(previous)
            if backend.retries > 0:
                task.set_retry(num_retries=backend.retries)
            if on_cluster:
                _on_cluster(task, backend, claim)
                kubernetes.set_security_context(task, run_as_user=backend.run_as_user,
                                                run_as_group=backend.run_as_group, run_as_non_root=True)
                if step.accelerated and not launches:
                    _accelerated(task, backend.resources, step.distributed)
            previous = task
        if on_cluster and backend.serve.enabled:
            previous = _serve(backend, inputs["config_yaml"], run_dir, run_id, claim).after(previous)
        if on_cluster and volume.mode == "create" and volume.delete_after:
            # Runs only when every step succeeded: after a failure the volume stays for inspection.
            delete = kubernetes.DeletePVC(pvc_name=claim).after(previous)
            delete.set_display_name("delete-volume")
            delete.set_caching_options(False)

    mmclf.__signature__ = signature
    mmclf.__doc__ = _docstring(class_needed)
    return dsl.pipeline(mmclf, name=PIPELINE_NAME, pipeline_config=pipeline_config(backend) if on_cluster else None)
