"""After creating the InferenceService, the serve task waits until it is Ready and answers, or fails with why.

KServe's status (serving.kserve.io/v1beta1, its Go InferenceServiceStatus): Knative-style ``conditions``,
``Ready`` being PredictorReady and IngressReady together; ``modelStatus.transitionStatus``
``BlockedByFailedLoad`` or ``InvalidSpec`` with ``lastFailureInfo`` (reason, message, location) when the
model cannot load; ``address.url``, the endpoint inside the cluster. Where the status says nothing more, the
predictor pods (label ``serving.kserve.io/inferenceservice``) say why they do not start: a waiting
container's reason (ImagePullBackOff, CreateContainerConfigError: runAsNonRoot on a root image, ...).

On Ready, a smoke inference: the run's first test images, kept by the export step with model.onnx's scores
of them (smoke_test.npz), through the v2 protocol at ``address.url``; the answer must be those scores
(top-1 equal, every score within SCORE_TOLERANCE).
"""
import json
import logging
import time
import urllib.request
from pathlib import Path

import numpy as np
import urllib3
from kubernetes import client

from backends.kfp.serving.manifest import GROUP, PLURAL, VERSION
from backends.kfp.submitting.endpoint import CONNECT_S, READ_S
from mmclf.deploy.protocol import INPUT, MODEL_NAME, OUTPUT
from mmclf.errors import StepFailed

log = logging.getLogger(__name__)
POD_LABEL = "serving.kserve.io/inferenceservice"  # KServe's label on an InferenceService's pods
FAILED_TRANSITIONS = ("BlockedByFailedLoad", "InvalidSpec")
SCORE_TOLERANCE = 1e-3  # fp32 on both sides; another onnxruntime build may round differently


class NotReady(StepFailed):
    """The InferenceService did not become Ready, or its endpoint did not answer as the model does."""


def condition(status: dict, kind: str) -> dict:
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), {})


def _said(entry: dict) -> str:
    return ": ".join(part for part in (entry.get("reason"), entry.get("message")) if part)


def status_reason(status: dict) -> str:
    """Why the status says the service is not Ready: the model's last failure, else the first condition that
    is not True and gives a reason; "" when it says nothing yet."""
    failure = status.get("modelStatus", {}).get("lastFailureInfo")
    if failure:
        where = f" (pod {failure['location']})" if failure.get("location") else ""
        return _said(failure) + where
    # The component's own condition says more than Ready, which aggregates them.
    pending = sorted((c for c in status.get("conditions", []) if c.get("status") != "True"),
                     key=lambda c: c.get("type") == "Ready")
    return next((f"{c['type']}={c.get('status')} ({_said(c)})" for c in pending if _said(c)), "")


def pod_reason(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The first waiting or terminated container reason of the service's predictor pods; "" when none (or
    the task may not list pods: the status alone is reported then)."""
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{POD_LABEL}={name}",
                                        _request_timeout=(CONNECT_S, READ_S)).items
    except client.ApiException:
        return ""
    for pod in pods:
        for container in pod.status.container_statuses or []:
            state = container.state.waiting or container.state.terminated
            if state is not None and state.reason:
                return f"pod {pod.metadata.name}: {state.reason}{f' ({state.message})' if state.message else ''}"
        if pod.status.reason:
            return f"pod {pod.metadata.name}: {pod.status.reason}"
    return ""


def wait_until_ready(cluster, namespace: str, name: str, timeout_s: float, poll_s: float) -> dict:
    """The InferenceService's status once Ready; NotReady (one line, the reason) when its model cannot load
    or ``timeout_s`` passes first."""
    api, deadline = client.CustomObjectsApi(cluster.api), time.monotonic() + timeout_s
    while True:
        try:
            status = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name,
                                                      _request_timeout=(CONNECT_S, READ_S)).get("status", {})
        except (client.ApiException, urllib3.exceptions.HTTPError) as exc:
            raise NotReady(f"serve: reading InferenceService {name}'s status in namespace {namespace} failed "
                           f"({getattr(exc, 'reason', None) or exc}): it was created; kubectl get inferenceservice "
                           f"{name} -n {namespace} shows it") from None
        if condition(status, "Ready").get("status") == "True":
            return status
        failed = status.get("modelStatus", {}).get("transitionStatus") in FAILED_TRANSITIONS
        if failed or time.monotonic() >= deadline:
            why = "; ".join(filter(None, (status_reason(status), pod_reason(client.CoreV1Api(cluster.api),
                                                                            namespace, name))))
            verdict = "cannot serve the model" if failed else f"is not Ready after {timeout_s:g} s"
            raise NotReady(f"serve: InferenceService {name} in namespace {namespace} {verdict}: "
                           f"{why or 'the status gives no reason yet'} (kubectl describe inferenceservice {name} -n "
                           f"{namespace}; backend.serve.ready_timeout_s waits longer)")
        time.sleep(poll_s)


def smoke_test(url: str, smoke_path: Path, timeout_s: float = READ_S) -> None:
    """A v2 JSON inference of the run's smoke_test.npz images at ``url``; NotReady unless it answers their
    scores."""
    if not url:
        raise NotReady("serve: the InferenceService is Ready but reports no address (status.address.url) to send a "
                       "smoke inference to; set backend.serve.smoke_test=false to skip it")
    if not smoke_path.is_file():
        raise NotReady(f"serve: {smoke_path}: missing, so there is nothing to check the endpoint with (the run was "
                       "exported by an mmclf that did not keep it); run the export step again, or set "
                       "backend.serve.smoke_test=false")
    with np.load(smoke_path) as kept:
        images, expected = kept["images"], kept["scores"]
    body = {"inputs": [{"name": INPUT, "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.ravel().tolist()}]}
    request = urllib.request.Request(f"{url.rstrip('/')}/v2/models/{MODEL_NAME}/infer", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            outputs = {output["name"]: output for output in json.load(response)["outputs"]}
        served = np.asarray(outputs[OUTPUT]["data"], dtype=np.float32).reshape(expected.shape)
    except Exception as err:  # refused, timed out, an error status, or an answer of another shape
        raise NotReady(f"serve: the InferenceService is Ready but {url}/v2/models/{MODEL_NAME}/infer did not answer "
                       f"a smoke inference ({type(err).__name__}: {err}); where a mesh keeps pipeline pods from the "
                       "predictor, set backend.serve.smoke_test=false") from None
    if (served.argmax(1) != expected.argmax(1)).any() or np.abs(served - expected).max() > SCORE_TOLERANCE:
        raise NotReady(f"serve: {url} answers other scores than the run's model.onnx for its test images (at most "
                       f"{np.abs(served - expected).max():.2e} apart, {SCORE_TOLERANCE:.0e} allowed): it serves "
                       "another model")
    log.info("serve: smoke inference of %d test images at %s: the run's scores", len(images), url)
