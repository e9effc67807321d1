"""backend=kfp, mode=compile: the shared volume in the compiled pipeline: the claim create-volume asks
for (access modes, storage class), volume-permissions, delete-volume, an existing claim, a KFP workspace.
Read back with yaml from kfp's own compiler, no cluster reachable (test_kfp_pipeline.py's helpers)."""
import pytest
from kfp import dsl
from omegaconf import OmegaConf

from backends.kfp.volume.layout import WORKSPACE_MOUNT_PATH
from tests.test_kfp_pipeline import POD_TASKS, STEP_TASKS, compile_pipeline, executor, inputs_of, k8s_of, tasks_of

pytestmark = pytest.mark.usefixtures("no_cluster_access")  # tests/conftest.py


@pytest.mark.parametrize("overrides, modes", [
    ([], ["ReadWriteOnce"]),  # one pod at a time: a mode every storage class can make
    (["backend.distributed=trainjob", "dist.nnodes=2"], ["ReadWriteMany"]),  # the nodes mount it at once
    (["backend.volume.access_modes=[ReadWriteMany,ReadWriteOnce]"], ["ReadWriteMany", "ReadWriteOnce"]),
])
def test_the_claim_asks_for_the_access_modes_the_run_needs(tmp_path, overrides, modes):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.storage_class=nfs-client", *overrides)
    assert inputs_of(spec, "createpvc")["access_modes"]["runtimeValue"]["constant"] == modes



def test_create_volume_requests_the_configured_claim(tmp_path, capsys):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.size=50Gi", "backend.volume.storage_class=nfs-client",
                                  "backend.volume.access_modes=[ReadWriteOnce]")
    constants = {key: value["runtimeValue"]["constant"] for key, value in inputs_of(spec, "createpvc").items()}
    assert constants == {"size": "50Gi", "storage_class_name": "nfs-client", "access_modes": ["ReadWriteOnce"],
                         "pvc_name_suffix": "-mmclf"}
    assert "storage_class" not in spec["root"]["inputDefinitions"]["parameters"]
    assert "storage class" not in capsys.readouterr().out, "a configured class needs no word"



def test_an_unknown_storage_class_is_a_required_pipeline_parameter_never_the_drivers_standard(tmp_path, capsys):
    # Without storage_class_name KFP's driver writes storageClassName "standard" (kubeflow/pipelines#11396).
    _, spec, _ = compile_pipeline(tmp_path)
    assert inputs_of(spec, "createpvc")["storage_class_name"] == {"componentInputParameter": "storage_class"}
    parameter = spec["root"]["inputDefinitions"]["parameters"]["storage_class"]
    assert parameter == {"parameterType": "STRING", "description": parameter["description"]}, "no default: required"
    assert "kubectl get storageclass" in parameter["description"]
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if line.startswith("storage class:")]
    assert "no kubeconfig" in line and "parameter storage_class" in line
    assert "fill in its parameter storage_class" in out



def test_volume_permissions_runs_first_as_root_and_the_steps_as_the_images_user(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.run_as_user=2000", "backend.run_as_group=3000")
    _, container = executor(spec, "volume-permissions")
    assert container["command"] == ["python", "-m", "backends.kfp.volume.permissions"]
    assert container["args"] == ["{{$.inputs.parameters['mount_path']}}", "{{$.inputs.parameters['uid']}}",
                                 "{{$.inputs.parameters['gid']}}"]
    constants = {key: value["runtimeValue"]["constant"] for key, value in inputs_of(spec, "volume-permissions").items()}
    assert constants == {"mount_path": "/mnt/mmclf", "uid": 2000, "gid": 3000}
    assert k8s_of(spec, kubernetes, "volume-permissions")["securityContext"] == {"runAsUser": "0", "runAsGroup": "0"}
    for task in STEP_TASKS:
        assert k8s_of(spec, kubernetes, task)["securityContext"] == {
            "runAsUser": "2000", "runAsGroup": "3000", "runAsNonRoot": True}



def test_make_writable_false_leaves_the_volume_alone(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.make_writable=false")
    assert "volume-permissions" not in tasks_of(spec)
    assert "createpvc" in tasks_of(spec)["prepare-data"]["dependentTasks"]



def test_delete_volume_runs_last_on_the_created_claim(tmp_path):
    _, spec, _ = compile_pipeline(tmp_path, "backend.volume.delete_after=true")
    delete = tasks_of(spec)["deletepvc"]
    assert delete["taskInfo"]["name"] == "delete-volume"
    assert "produce-metrics" in delete["dependentTasks"]
    assert delete["inputs"]["parameters"]["pvc_name"]["taskOutputParameter"]["producerTask"] == "createpvc"
    assert "deletepvc --> " not in (tmp_path / "pipeline_graph.md").read_text()



def test_existing_claim_is_mounted_by_name_and_nothing_is_created(tmp_path, capsys):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.volume.mode=existing",
                                           "backend.volume.claim_name=mmclf-data", "backend.volume.delete_after=true")
    assert sorted(tasks_of(spec)) == sorted(POD_TASKS)
    for task in POD_TASKS:
        (mount,) = k8s_of(spec, kubernetes, task)["pvcMount"]
        assert mount["pvcNameParameter"]["runtimeValue"]["constant"] == "mmclf-data"
        assert mount["mountPath"] == "/mnt/mmclf"
    assert "storage class" not in capsys.readouterr().out



def test_workspace_mode_uses_the_kfp_run_workspace(tmp_path):
    _, spec, kubernetes = compile_pipeline(tmp_path, "backend.volume.mode=workspace", "backend.volume.size=5Gi",
                                           "backend.volume.storage_class=nfs-client")
    assert sorted(tasks_of(spec)) == sorted(POD_TASKS)
    assert kubernetes["pipelineConfig"]["workspace"] == {
        "size": "5Gi",
        "kubernetes": {"pvcSpecPatch": {"accessModes": ["ReadWriteOnce"], "storageClassName": "nfs-client"}}}
    assert all("pvcMount" not in k8s_of(spec, kubernetes, task) for task in POD_TASKS)
    # The driver mounts the workspace into every task with a parameter value naming its path.
    assert WORKSPACE_MOUNT_PATH == dsl.constants.WORKSPACE_MOUNT_PATH
    assert inputs_of(spec, "volume-permissions")["mount_path"]["runtimeValue"]["constant"] == WORKSPACE_MOUNT_PATH
    run_dir = inputs_of(spec, "train")["run_dir"]["runtimeValue"]["constant"]
    assert run_dir.startswith(f"{WORKSPACE_MOUNT_PATH}/runs/")
    config_yaml = spec["root"]["inputDefinitions"]["parameters"]["config_yaml"]["defaultValue"]
    assert OmegaConf.create(config_yaml).data.root == f"{WORKSPACE_MOUNT_PATH}/data"



def test_workspace_mode_without_a_class_leaves_it_to_kubernetes(tmp_path):
    _, _, kubernetes = compile_pipeline(tmp_path, "backend.volume.mode=workspace")
    assert kubernetes["pipelineConfig"]["workspace"]["kubernetes"]["pvcSpecPatch"] == {"accessModes": ["ReadWriteOnce"]}
