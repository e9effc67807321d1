"""The serve task (backend.serve.enabled): after produce-metrics, the gate, then the InferenceService.

Runs in the task's pod, on the shared volume, through the Kubernetes API with the pod's service account,
which needs ``create``, ``get`` and ``update`` on ``inferenceservices.serving.kserve.io`` in the namespace
(the README gives the Role). The gate: metrics.json's ``optimized_metric`` must reach
``backend.serve.min_metric`` (null: always deploy); below it the task logs one line why and succeeds.
Otherwise it lays out the Triton model repository in the run's folder (serving/manifest.py), writes the manifest
beside it (inferenceservice.yaml) and creates the InferenceService with ``fieldValidation=Strict``, so a
field KServe does not know is an error, not silently dropped. The name is the pipeline's, not the KFP
run's: one that exists (an earlier try, or an earlier run of the pipeline) is replaced. The task then
ends only on a Ready service that answers as the run's model does (readiness.py): otherwise it fails, in
one line with the reason.

``python -m backends.kfp.serving.serve_task --config-yaml YAML --run-dir DIR --run-id ID --claim-name CLAIM``
is the custom container component's entry; Python-function components call :func:`serve_in_pod`.
"""
import argparse
import logging

import urllib3
from kubernetes import client
from omegaconf import DictConfig, OmegaConf

from backends.kfp.cluster.kube import api_message, connect
from backends.kfp.serving.manifest import (
    GROUP,
    PLURAL,
    RBAC_FIX,
    VERSION,
    inference_service,
    manifest_text,
    write_model_repository,
)
from backends.kfp.serving.readiness import smoke_test, wait_until_ready
from backends.kfp.submitting.endpoint import CONNECT_S, READ_S
from backends.kfp.trainjob.api import pod_namespace
from backends.kfp.volume.layout import run_folder
from mmclf.deploy.protocol import MODEL_NAME
from mmclf.errors import StepFailed, one_line_errors
from mmclf.reports.jobs import objective
from mmclf.run.io import read_json, write_text_atomic
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)


class ServeFailed(StepFailed):
    """The InferenceService could not be created."""


def passes_gate(cfg: DictConfig, metrics: dict) -> tuple[bool, str]:
    """(whether the run is deployed, the line that says why) from metrics.json's optimized_metric."""
    key, gate = cfg.optimized_metric, cfg.backend.serve.min_metric
    value = objective(cfg, metrics)
    if gate is None:
        return True, f"{key}={value:.2f}, backend.serve.min_metric=null: deploying"
    if value >= gate:
        return True, f"{key}={value:.2f} reaches backend.serve.min_metric={gate}: deploying"
    return False, f"not deployed: {key}={value:.2f} is below backend.serve.min_metric={gate}"


def _refused(manifest: dict, exc: client.ApiException) -> ServeFailed:
    meta = manifest["metadata"]
    what = (f"creating InferenceService {meta['name']} in namespace {meta['namespace']}: HTTP {exc.status} "
            f"{exc.reason}: {api_message(exc)}")
    if exc.status == 404:
        return ServeFailed(f"{what}; the cluster serves no InferenceService API ({GROUP}/{VERSION}): install KServe, "
                           "or set backend.serve.enabled=false")
    if exc.status in (401, 403):
        return ServeFailed(f"{what}; {RBAC_FIX}")
    return ServeFailed(f"{what} (KServe's webhook or the API server's word; inferenceservice.yaml in the run's folder "
                       "shows the manifest)")


def create_or_replace(api: client.CustomObjectsApi, manifest: dict) -> str:
    """Create the InferenceService, or replace the one of that name; "created" or "replaced"."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    call = dict(field_validation="Strict", _request_timeout=(CONNECT_S, READ_S))
    try:
        try:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest, **call)
            return "created"
        except client.ApiException as exc:
            if exc.status != 409:
                raise
        # An update must name the version it replaces (custom resources allow no unconditional update).
        existing = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                    _request_timeout=call["_request_timeout"])
        body = {**manifest, "metadata": {**manifest["metadata"],
                                         "resourceVersion": existing["metadata"]["resourceVersion"]}}
        api.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body, **call)
        return "replaced"
    except client.ApiException as exc:
        raise _refused(manifest, exc) from None
    except urllib3.exceptions.HTTPError as exc:
        raise ServeFailed(f"creating InferenceService {name} in namespace {namespace}: cannot reach the Kubernetes "
                          f"API ({getattr(exc, 'reason', None) or exc})") from None


def serve(cfg: DictConfig, run_dir: str, run_id: str, claim_name: str) -> None:
    """The gate, then the model repository, the manifest and the InferenceService of ``<run_dir>-<run_id>``."""
    folder = RunDir(run_folder(run_dir, run_id))
    deploy, why = passes_gate(cfg, read_json(folder.metrics))
    log.info("serve: %s", why)
    if not deploy:
        return
    backend = cfg.backend
    cluster = connect(backend)
    namespace = backend.serve.namespace or pod_namespace(backend)
    if namespace != pod_namespace(backend):
        raise ServeFailed(f"backend.serve.namespace={namespace}: the model is read from claim {claim_name} in "
                          f"namespace {pod_namespace(backend)} (pvc:// storage is read in the InferenceService's own "
                          "namespace); set backend.serve.namespace=null")
    write_model_repository(folder, backend.serve.max_batch_size)
    manifest = inference_service(cfg, run_dir, run_id, claim_name, namespace)
    write_text_atomic(folder.inference_service, manifest_text(manifest, "# Created by the serve task.\n"))
    done = create_or_replace(client.CustomObjectsApi(cluster.api), manifest)
    name = manifest["metadata"]["name"]
    log.info("serve: InferenceService %s %s in namespace %s (storage %s); waiting up to %g s for it to be Ready",
             name, done, namespace, manifest["spec"]["predictor"]["model"]["storageUri"],
             backend.serve.ready_timeout_s)
    status = wait_until_ready(cluster, namespace, name, backend.serve.ready_timeout_s, backend.serve.poll_interval_s)
    url = status.get("address", {}).get("url") or status.get("url")
    if backend.serve.smoke_test:
        smoke_test(url, folder.smoke_test)
    log.info("serve: InferenceService %s is Ready at %s: POST %s/v2/models/%s/infer", name, url, url, MODEL_NAME)


def serve_in_pod(config_yaml: str, run_dir: str, run_id: str, claim_name: str) -> None:
    """What the serve task's pod runs; a user error ends in one line and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    with one_line_errors():
        serve(OmegaConf.create(config_yaml), run_dir, run_id, claim_name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m backends.kfp.serving.serve_task",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--config-yaml", required=True, help="the resolved config as YAML text")
    parser.add_argument("--run-dir", required=True, help="the run directory on the shared volume")
    parser.add_argument("--run-id", required=True, help="the KFP run's id: the run's folder is <run dir>-<run id>")
    parser.add_argument("--claim-name", required=True, help="the claim the volume is")
    args = parser.parse_args(argv)
    serve_in_pod(args.config_yaml, args.run_dir, args.run_id, args.claim_name)


if __name__ == "__main__":
    main()
