"""The train task with backend.distributed=trainjob: create the TrainJob (trainjob/manifest.py), wait, clean up.

The TrainJob is the launcher of the train step: each node runs the step entry point
(``python -m mmclf.steps train --run-dir FOLDER``), which reads the run folder's config.yaml and
starts torchrun; node 0 records the step in steps.json, as any run of the step does.

Runs in the train task's pod, through the Kubernetes API with the pod's service account, which needs
``create``, ``get`` and ``delete`` on ``trainjobs.trainer.kubeflow.org`` in the run's namespace (the
README gives the Role). The TrainJob is named after the KFP run, so a retried task finds the one an
earlier try created: it waits for it if it is still going, and replaces it if it failed.

Each change of the TrainJob's state (trainjob/api.py) is logged in one line. A completed TrainJob is
deleted (its JobSet and pods with it) unless ``backend.keep_trainjob``; a failed one is kept, for its
pods' logs; one whose nodes never ran is deleted (trainjob/start.py says why they did not).
"""
import logging
import math
import os
import signal
import threading
import time
from contextlib import contextmanager

import urllib3
from kubernetes import client
from omegaconf import DictConfig

from backends.kfp.cluster.kube import api_message, connect
from backends.kfp.submitting.endpoint import CONNECT_S, READ_S
from backends.kfp.trainjob.api import TrainJobs, condition, pod_namespace, state_line
from backends.kfp.trainjob.manifest import GROUP, PLURAL, RBAC_FIX, RIGHTS, V2_1_ANSWER, VERSION, trainjob_manifest
from backends.kfp.trainjob.node_logs import follow_node_zero
from backends.kfp.trainjob.start import started, why_not_started
from backends.kfp.volume.layout import run_folder
from mmclf.errors import MMClfError, StepFailed
from mmclf.models.config import run_fingerprint
from mmclf.run.io import read_record
from mmclf.run.rundir import RunDir
from mmclf.steps import recorded, step_named

log = logging.getLogger(__name__)
GONE_WAIT_S = 120  # replacing a failed TrainJob of an earlier try: how long its deletion may take
POD_NAME, POD_UID = "KFP_POD_NAME", "KFP_POD_UID"  # set by KFP's driver in every task's container (downward API)
LOG_DRAIN_S = 10  # a finished TrainJob: how long node 0's last log lines may take to arrive


class TrainJobFailed(StepFailed):
    """The TrainJob could not be created, or did not complete."""


class TrainJobRightsMissing(MMClfError):
    """The train task's own account may not create, read or delete TrainJobs: refused before creating any."""


class Stopped(BaseException):
    """SIGTERM: KFP stops the task (the run was terminated, or the task's timeout passed)."""


def owned_by_this_pod(manifest: dict) -> dict:
    """``manifest`` owned by the train task's pod (KFP gives every task's container its pod's name and uid,
    ``KFP_POD_NAME``, ``KFP_POD_UID``), so that deleting the run's pods (deleting the KFP run) deletes
    the TrainJob too, however the task ended; unchanged outside a KFP pod."""
    if not (os.environ.get(POD_NAME) and os.environ.get(POD_UID)):
        return manifest
    owner = {"apiVersion": "v1", "kind": "Pod", "name": os.environ[POD_NAME], "uid": os.environ[POD_UID]}
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [owner]}}


def check_own_rights(jobs: TrainJobs) -> None:
    """Ask the API server, as this pod's own account (a SelfSubjectAccessReview, which any account may make),
    whether it may create, read and delete TrainJobs; refuse before creating one it could not clean up.
    A cluster that will not answer leaves the create to say so itself."""
    authorization = client.AuthorizationV1Api(jobs.api.api_client)
    denied = []
    for verb in RIGHTS:
        review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(group=GROUP, resource=PLURAL, verb=verb,
                                                            namespace=jobs.namespace)))
        try:
            answer = authorization.create_self_subject_access_review(review, _request_timeout=(CONNECT_S, READ_S))
        except client.ApiException as exc:
            log.warning("trainjob: could not ask for this pod's rights (HTTP %s: %s); creating it all the same",
                        exc.status, api_message(exc))
            return
        if not answer.status.allowed:
            denied.append(verb)
    if denied:
        raise TrainJobRightsMissing(f"this pod's service account may not {', '.join(denied)} trainjobs."
                                    f"{GROUP} in namespace {jobs.namespace} (a SelfSubjectAccessReview says so); "
                                    f"{RBAC_FIX}")


def _create_served(jobs: TrainJobs, manifests: tuple[dict, dict]) -> dict:
    """Create the TrainJob for the Trainer the cluster serves: the v2.2+ manifest, else (a strict decoding
    error naming runtimePatches: Trainer v2.1, as Kubeflow platform releases ship it) the v2.1 one."""
    current, v2_1 = manifests
    try:
        jobs.create(current)
        return current
    except client.ApiException as exc:
        if exc.status != 400 or V2_1_ANSWER not in api_message(exc):
            raise
    log.warning("trainjob %s: the cluster's Kubeflow Trainer has no runtimePatches (v2.1): creating it with "
                "podTemplateOverrides, without the node pods' user, security context and deadline, which v2.1 "
                "cannot set (Trainer v2.2 or later sets them)", current["metadata"]["name"])
    jobs.create(v2_1)
    return v2_1


def _create(jobs: TrainJobs, manifests: tuple[dict, dict]) -> None:
    """Create the TrainJob; one an earlier try of this task made is waited for, or replaced if it failed."""
    name = manifests[0]["metadata"]["name"]
    try:
        manifest = _create_served(jobs, manifests)
        log.info("trainjob %s: created in namespace %s (%d nodes x %d processes, runtime %s)", name, jobs.namespace,
                 manifest["spec"]["trainer"]["numNodes"], manifest["spec"]["trainer"]["numProcPerNode"],
                 manifest["spec"]["runtimeRef"]["name"])
        return
    except client.ApiException as exc:
        if exc.status != 409:
            raise _refused(jobs, name, exc) from None
    earlier = jobs.get(name)
    if not condition(earlier, "Failed"):
        log.info("trainjob %s: an earlier try of this task created it; waiting for it", name)
        return
    log.info("trainjob %s: an earlier try of this task created it, and it failed; replacing it", name)
    jobs.delete(name)
    _wait_gone(jobs, name)
    _create_served(jobs, manifests)


def _refused(jobs: TrainJobs, name: str, exc: client.ApiException) -> TrainJobFailed:
    what = f"creating {jobs.where(name)}: HTTP {exc.status}: {api_message(exc)}"
    if exc.status == 404:
        return TrainJobFailed(f"{what}; the cluster serves no TrainJob API ({GROUP}/{VERSION}): install Kubeflow "
                              "Trainer v2.3, or set backend.distributed=pod")
    if exc.status in (401, 403):
        return TrainJobFailed(f"{what}; {RBAC_FIX}")
    return TrainJobFailed(f"{what} (the Trainer webhook's or API server's word; trainjob.yaml in the run dir shows "
                          "the manifest)")


def _wait_gone(jobs: TrainJobs, name: str) -> None:
    deadline = time.monotonic() + GONE_WAIT_S
    while time.monotonic() < deadline:
        try:
            jobs.get(name)
        except client.ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1)
    raise TrainJobFailed(f"{jobs.where(name)}: an earlier try's failed TrainJob was not gone {GONE_WAIT_S} s after "
                         f"deleting it; kubectl delete trainjob -n {jobs.namespace} {name}, then retry")


class NotStarted(TrainJobFailed):
    """No node pod of the TrainJob ran within backend.trainjob.start_timeout_s."""


def _read(jobs: TrainJobs, name: str):
    """The TrainJob, or None when the API server did not answer this time (it goes on regardless)."""
    try:
        return jobs.get(name)
    except client.ApiException as exc:
        if exc.status == 404:
            raise TrainJobFailed(f"{jobs.where(name)} was deleted while it ran (not by this task); "
                                 "run the pipeline again") from None
        log.warning("trainjob %s: reading its status: HTTP %s: %s; trying again", name, exc.status, api_message(exc))
    except urllib3.exceptions.HTTPError as exc:  # the API server restarting
        log.warning("trainjob %s: reading its status: %s; trying again", name, exc)
    return None


def wait(jobs: TrainJobs, name: str, poll_s: float, start_timeout_s: float = math.inf) -> dict:
    """Poll until the TrainJob is Complete or Failed, logging each change of state and, once a node runs,
    node 0's log; return it. NotStarted when no node pod has run ``start_timeout_s`` after the wait
    began, saying why as the cluster does."""
    shown, deadline, follower = None, time.monotonic() + start_timeout_s, None
    while True:
        trainjob = _read(jobs, name)
        if trainjob is None:
            time.sleep(poll_s)
            continue
        line = state_line(trainjob)
        if line != shown:
            log.info("trainjob %s: %s", name, line)
            shown = line
        if follower is None and started(trainjob):
            follower = follow_node_zero(jobs.core, jobs.namespace, name)
        if condition(trainjob, "Complete") or condition(trainjob, "Failed"):
            if follower is not None:
                follower.join(LOG_DRAIN_S)  # the end of node 0's log before the task's verdict
            return trainjob
        if follower is None and time.monotonic() > deadline:
            raise NotStarted(why_not_started(jobs.core, jobs.namespace, name, trainjob, start_timeout_s))
        time.sleep(poll_s)


@contextmanager
def _stop_on_sigterm():
    """KFP stops a task with SIGTERM: raise Stopped in the waiting thread, so the TrainJob is cleaned up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(*_):
        raise Stopped()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def delete_trainjob(jobs: TrainJobs, name: str, why: str) -> None:
    """Delete TrainJob ``name``; one already gone is fine, one that cannot be is one warning line."""
    try:
        jobs.delete(name)
        log.info("trainjob %s: deleted (%s; backend.keep_trainjob=true keeps it)", name, why)
    except client.ApiException as exc:
        if exc.status != 404:
            log.warning("trainjob %s: could not delete it (HTTP %s: %s); kubectl delete trainjob -n %s %s",
                        name, exc.status, api_message(exc), jobs.namespace, name)


def train_on_trainjob(cfg: DictConfig, run_dir: str, run_id: str, claim_name: str) -> None:
    """The train step of ``cfg`` in ``<run_dir>-<run_id>`` on a TrainJob, unless the folder records it
    done (a retried task); the nodes record it, and a TrainJob that completes without that is a failure."""
    folder, fingerprint = RunDir(run_folder(run_dir, run_id)), run_fingerprint(cfg)
    if step_named("train").done(cfg, folder, read_record(folder.steps_record), fingerprint):
        log.info("step train: already done in %s, skipping", folder)
        return
    train_with_trainjob(cfg, run_dir, run_id, claim_name)
    if not recorded("train", fingerprint, read_record(folder.steps_record)):
        raise TrainJobFailed(f"the TrainJob completed, but {folder.steps_record} records no finished train step "
                             "for this run's config: node 0 did not record it (its log says why)")


def train_with_trainjob(cfg: DictConfig, run_dir: str, run_id: str, claim_name: str) -> None:
    """Train ``cfg`` in ``<run_dir>-<run_id>`` as a TrainJob of ``dist.nnodes`` nodes on the claim
    ``claim_name``; return when it completes, TrainJobFailed when it does not."""
    backend = cfg.backend
    jobs = TrainJobs(connect(backend).api, pod_namespace(backend))
    check_own_rights(jobs)
    manifests = tuple(owned_by_this_pod(trainjob_manifest(cfg, run_dir, run_id, claim_name, jobs.namespace,
                                                          trainer_v2_1=v2_1)) for v2_1 in (False, True))
    name = manifests[0]["metadata"]["name"]
    _create(jobs, manifests)
    try:
        with _stop_on_sigterm():
            trainjob = wait(jobs, name, backend.trainjob.poll_interval_s, backend.trainjob.start_timeout_s)
    except (Stopped, KeyboardInterrupt, NotStarted) as stop:
        if not backend.keep_trainjob:  # a TrainJob that never ran has no logs to keep, only pods waiting
            why = "it never started" if isinstance(stop, NotStarted) else "the train task was stopped"
            delete_trainjob(jobs, name, why)
        raise
    failed = condition(trainjob, "Failed")
    if failed:
        raise TrainJobFailed(f"{jobs.where(name)} failed ({failed.get('reason')}: {failed.get('message')}); node 0's "
                             f"log is above; {jobs.logs_hint(name)} (the run's clean-up task deletes it when the "
                             "run ends, unless backend.keep_trainjob=true)")
    if not backend.keep_trainjob:
        delete_trainjob(jobs, name, "it completed")
