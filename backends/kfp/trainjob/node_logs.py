"""Node 0's log in the train task's own log (the KFP UI's Logs tab), while the TrainJob runs.

Node 0 is the pod of the TrainJob's JobSet at completion index 0 (``PET_NODE_RANK=0``): rank 0, which
logs the training's progress. Its container log is followed from the moment a node pod runs until the
container ends, line by line, prefixed ``node 0:``. Reading pod logs needs ``list`` on ``pods`` and
``get`` on ``pods/log`` in the namespace; without them one warning line says how to read it instead.
"""
import logging
import threading

from kubernetes import client

from backends.kfp.submitting.endpoint import CONNECT_S, READ_S
from backends.kfp.trainjob.manifest import NODE

log = logging.getLogger(__name__)
NODE_ZERO = "batch.kubernetes.io/job-completion-index=0"


def node_zero(core: client.CoreV1Api, namespace: str, name: str):
    """The name of the TrainJob ``name``'s node 0 pod, or None while there is none."""
    selector = f"jobset.sigs.k8s.io/jobset-name={name},{NODE_ZERO}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector, _request_timeout=(CONNECT_S, READ_S)).items
    return pods[0].metadata.name if pods else None


def _follow(core: client.CoreV1Api, namespace: str, name: str) -> None:
    hint = f"kubectl logs -n {namespace} -l jobset.sigs.k8s.io/jobset-name={name},{NODE_ZERO} -f"
    try:
        pod = node_zero(core, namespace, name)
        if pod is None:
            log.warning("trainjob %s: node 0's pod is not listed; its log: %s", name, hint)
            return
        answer = core.read_namespaced_pod_log(pod, namespace, container=NODE, follow=True, _preload_content=False,
                                              _request_timeout=(CONNECT_S, None))
        for line in _lines(answer):
            log.info("node 0: %s", line)
    except (client.ApiException, OSError) as exc:
        log.warning("trainjob %s: node 0's log cannot be followed here (%s); its log: %s", name,
                    getattr(exc, "status", None) or exc, hint)


def _lines(answer):
    """The lines of a streamed HTTP answer, as they come."""
    pending = b""
    for chunk in answer.stream(1024):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from (line.decode(errors="replace") for line in lines)
    if pending:
        yield pending.decode(errors="replace")


def follow_node_zero(core: client.CoreV1Api, namespace: str, name: str) -> threading.Thread:
    """Follow node 0's log in a thread of its own (a daemon: it never keeps the task alive)."""
    thread = threading.Thread(target=_follow, args=(core, namespace, name), daemon=True, name="node-0-log")
    thread.start()
    return thread
