"""Talk to a Kubeflow Pipelines API server: submit a compiled pipeline, wait for it, read its metrics back.

Runs and experiments go through the kfp SDK client, which speaks the KFP v2beta1 REST API. The
metric values of a finished run are read back from ML Metadata by mlmd.py; the connection facts
both share (host, token, KfpError) live in target.py.

The bearer token is sent in a header and nowhere else: never logged, printed or put in a message.
"""
import contextlib
import json
import logging
import re
import time
import warnings
from pathlib import Path
from typing import Optional

import kfp
import kfp_server_api
import urllib3
from omegaconf import DictConfig

from backends.kfp.compiling.naming import volume_description
from backends.kfp.submitting.endpoint import (
    CONNECT_S,
    READ_S,
    KfpError,
    KfpRunFailed,
    Target,
    auth_hint,
    target_from_config,
)
from backends.kfp.submitting.mlmd import read_metrics
from backends.kfp.submitting.run_record import write_run_record
from backends.kfp.volume.layout import run_folder
from mmclf.run.rundir import RunDir

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "mmclf"
FINAL_STATES = ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")  # V2beta1RuntimeState values that end a run
_HEALTH_READ_S = 10.0  # healthz is cheap: a server that accepts but does not answer fails sooner
_MAX_POLL_FAILURES = 5  # consecutive unanswered polls before waiting gives up (the run goes on regardless)


def submit(pipeline_file: Path, backend_cfg: DictConfig, run_name: str, arguments: dict,
           run_dir: str) -> Optional[dict]:
    """Create a run of ``pipeline_file`` on the KFP server of ``backend_cfg``; log its id, UI link and folder.

    The run goes into experiment ``backend.experiment`` (default "mmclf"), found by name or created,
    with ``arguments`` as the pipeline parameters; it writes in ``<run_dir>-<run id>`` on the volume.
    With ``backend.wait`` the run is polled every ``backend.poll_interval_s`` until it ends: SUCCEEDED
    returns the flat dict of scalar metrics its ``metrics`` output logged (MetricsNotReadBack when ML
    Metadata cannot say); any other end raises KfpError. Without ``wait`` this returns None.
    The run's id, link, folder and (after waiting) final state go to ``kfp_run.json`` beside the pipeline file.
    """
    target = target_from_config(Path(pipeline_file), backend_cfg)
    warning = security_context_ignored(check_reachable(target), backend_cfg)
    if warning:
        log.warning("%s", warning)
    client = _connect(target)
    experiment_name = backend_cfg.experiment or DEFAULT_EXPERIMENT
    experiment_id = _experiment_id(client, target, experiment_name)
    run_id = _create_run(client, target, experiment_id, run_name, arguments)
    folder = run_folder(run_dir, run_id)
    where = volume_description(backend_cfg.volume)
    log.info("KFP run %s created: %s; it writes to %s on %s", run_id, target.run_link(run_id), folder, where)
    record = {"run_id": run_id, "url": target.run_link(run_id), "experiment": experiment_name, "name": run_name,
              "run_dir": folder, "volume": where}
    local_dir = RunDir(pipeline_file.parent)
    write_run_record(local_dir, record)
    if not backend_cfg.wait:
        return None
    run = _wait_for_final_state(client, target, run_id, float(backend_cfg.poll_interval_s))
    write_run_record(local_dir, {**record, "state": run.state})
    _raise_unless_succeeded(target, run)
    metrics = read_metrics(target, run_id, f"{folder}/{RunDir.METRICS} on {where}")
    log.info("KFP run %s metrics: %s", run_id, metrics)
    return metrics


# --- errors -------------------------------------------------------------------------------------


def _server_message(exc: kfp_server_api.ApiException) -> str:
    """The server's own words: the message of a google.rpc.Status JSON body, else the raw body."""
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else (exc.body or "")
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        body = payload.get("message") or payload.get("error") or body
    return (str(body).strip() or str(exc.reason))[:500]


def _not_submitted(target: Target) -> str:
    if target.pipeline_file is None:
        return "fix backend.host / $KF_PIPELINES_ENDPOINT"
    return (f"nothing was submitted; {target.pipeline_file} stays in the run dir to upload by hand "
            "in the KFP UI, or fix backend.host / $KF_PIPELINES_ENDPOINT and submit again")


def _unreachable(target: Target, doing: str, reason, run_id: Optional[str]) -> KfpError:
    after = f"run {run_id} goes on on the cluster: {target.run_link(run_id)}" if run_id else _not_submitted(target)
    return KfpError(f"cannot reach the KFP API at {target.host} while {doing} ({reason}); {after}")


def _translate(exc: Exception, target: Target, doing: str, run_id: Optional[str] = None) -> KfpError:
    """One clear KfpError for an SDK/HTTP failure while ``doing``."""
    if not isinstance(exc, kfp_server_api.ApiException):  # urllib3: refused, DNS, timeout, TLS
        return _unreachable(target, doing, getattr(exc, "reason", None) or exc, run_id)
    status, message = exc.status, _server_message(exc)
    if not status:  # the generated client reports TLS failures as status 0
        return _unreachable(target, doing, message, run_id)
    if status in (401, 403):
        return KfpError(f"the KFP API at {target.host} refused auth (HTTP {status}) while {doing}: "
                        f"{message}; {auth_hint(target)}")
    if 300 <= status < 400:
        return KfpError(f"the KFP API at {target.host} redirected (HTTP {status}) while {doing}, "
                        f"most likely to a login page; {auth_hint(target)}")
    return KfpError(f"the KFP API at {target.host} answered HTTP {status} while {doing}: {message}")


@contextlib.contextmanager
def _api_errors(target: Target, doing: str):
    try:
        yield
    except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError) as exc:
        raise _translate(exc, target, doing) from exc


# --- REST: health, experiment, run --------------------------------------------------------------


def check_reachable(target: Target) -> dict:
    """GET healthz once with short timeouts and no redirects, so a wrong host, a dead server or a
    missing token fails in seconds; return what it says (``tag_name``: the KFP release, ``multi_user``).
    kfp.Client's own health check (run while it is constructed without a namespace) retries five
    times, 5 s apart, and follows redirects to login pages. Read raw: the API server's handler writes
    ``tag_name``, which kfp_server_api's response model does not declare (and would drop)."""
    config = kfp_server_api.Configuration(host=target.host)
    config.retries = urllib3.Retry(total=0, redirect=0, raise_on_redirect=False)
    if target.token:
        config.api_key["authorization"] = target.token
        config.api_key_prefix["authorization"] = "Bearer"
    with kfp_server_api.ApiClient(config) as api_client:
        try:
            answer = kfp_server_api.HealthzServiceApi(api_client).healthz_service_get_healthz(
                _request_timeout=(CONNECT_S, _HEALTH_READ_S), _preload_content=False)
        except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError) as exc:
            if getattr(exc, "status", None) == 404:  # the commonest slip: not KFP's UI or API address
                raise KfpError(f"{target.host} does not look like a KFP endpoint (GET /apis/v2beta1/healthz "
                               "answered HTTP 404): set backend.host to the KFP UI or API address, e.g. "
                               "http://localhost:8080 after kubectl port-forward svc/ml-pipeline-ui 8080:80; "
                               f"{_not_submitted(target)}") from exc
            raise _translate(exc, target, "checking its health") from exc
    try:
        health = json.loads(answer.data)
    except ValueError:
        raise KfpError(f"{target.host}: GET /apis/v2beta1/healthz answered no JSON: set backend.host to the KFP "
                       f"UI or API address; {_not_submitted(target)}") from None
    log.debug("KFP API at %s is up (%s)", target.host, health)
    return health


# KFP honours kfp-kubernetes' set_security_context (the volume-permissions task's root user) from 2.16.
SECURITY_CONTEXT_KFP = (2, 16)


def kfp_release(health: dict) -> Optional[tuple[int, int]]:
    """(major, minor) of the KFP release healthz names (``2.15.0``, ``v2.16.1``); None when it says none."""
    match = re.match(r"v?(\d+)\.(\d+)", str(health.get("tag_name", "")))
    return (int(match.group(1)), int(match.group(2))) if match else None


def security_context_ignored(health: dict, backend: DictConfig) -> Optional[str]:
    """What goes wrong where KFP is older than 2.16 and the run counts on a task running as root; else None."""
    release = kfp_release(health)
    if release is None or release >= SECURITY_CONTEXT_KFP or not backend.volume.make_writable:
        return None
    return (f"KFP {health['tag_name']} ignores the pods' security context (KFP honours it from 2.16): the "
            "volume-permissions task runs as the image's user instead of root and cannot make a root-owned "
            f"volume writable for uid {backend.run_as_user}; use a storage class whose volumes that uid can write "
            "(an NFS export), or backend.volume.mode=existing with a claim it can write and "
            "backend.volume.make_writable=false")


def _connect(target: Target) -> kfp.Client:
    # The SDK's default namespace argument means "none given"; pass one only when configured.
    namespace = {"namespace": target.namespace} if target.namespace else {}
    with warnings.catch_warnings(), _api_errors(target, "connecting"):
        # kfp.Client warns on every construction that it needs KFP >= 2.0.0-beta.2: not actionable.
        warnings.simplefilter("ignore", FutureWarning)
        return kfp.Client(host=target.host, existing_token=target.token, **namespace)


def _experiment_id(client: kfp.Client, target: Target, name: str) -> str:
    """Find experiment ``name`` (a display_name filter in the namespace) or create it:
    kfp.Client.create_experiment is get-or-create, so a sweep's jobs share one experiment."""
    with _api_errors(target, f"finding or creating experiment {name!r}"):
        try:
            experiment = client.create_experiment(name=name, namespace=target.namespace)
        except kfp_server_api.ApiException as exc:
            if exc.status != 409:
                raise
            # AlreadyExists: a sweep job running beside this one created it after the lookup.
            experiment = client.get_experiment(experiment_name=name, namespace=target.namespace)
        except ValueError as exc:  # e.g. several experiments carry the name
            raise KfpError(f"cannot use KFP experiment {name!r}: {exc}") from exc
    return experiment.experiment_id


def _create_run(client: kfp.Client, target: Target, experiment_id: str, run_name: str, arguments: dict) -> str:
    with _api_errors(target, f"creating run {run_name!r}"):
        run = client.run_pipeline(experiment_id=experiment_id, job_name=run_name,
                                  pipeline_package_path=str(target.pipeline_file), params=dict(arguments))
    return run.run_id


def _is_transient(exc: Exception) -> bool:
    """Worth another poll: no answer, or a 5xx from a busy or restarting server; a 4xx will not change."""
    if isinstance(exc, kfp_server_api.ApiException):
        return not exc.status or exc.status >= 500
    return True


def _wait_for_final_state(client: kfp.Client, target: Target, run_id: str, poll_interval_s: float):
    """Poll the run until it reaches a final state, logging each state change.

    Not kfp.Client.wait_for_run_completion: it does not treat CANCELED as final and sets no request
    timeout. A few unanswered polls in a row are tolerated, since a run can take hours."""
    state, failures = None, 0
    while True:
        try:
            # client.runs is the SDK's generated RunServiceApi; unlike get_run it takes a timeout.
            run = client.runs.run_service_get_run(run_id=run_id, _request_timeout=(CONNECT_S, READ_S))
        except (kfp_server_api.ApiException, urllib3.exceptions.HTTPError) as exc:
            failures += 1
            if not _is_transient(exc) or failures >= _MAX_POLL_FAILURES:
                raise _translate(exc, target, f"waiting for run {run_id}", run_id) from exc
            log.warning("KFP run %s: no answer from %s (%d/%d), polling again in %g s",
                        run_id, target.host, failures, _MAX_POLL_FAILURES, poll_interval_s)
        else:
            failures = 0
            if run.state != state:
                state = run.state
                log.info("KFP run %s: %s", run_id, state)
            if state in FINAL_STATES:
                return run
        time.sleep(poll_interval_s)


def _raise_unless_succeeded(target: Target, run) -> None:
    if run.state == "SUCCEEDED":
        return
    tasks = run.run_details.task_details if run.run_details else None
    failed = sorted({task.display_name for task in tasks or () if task.state == "FAILED" and task.display_name})
    detail = f"; failed tasks: {', '.join(failed)}" if failed else ""
    if run.error and run.error.message:
        detail += f"; {run.error.message}"
    raise KfpRunFailed(f"KFP run {run.run_id} ended {run.state}{detail}; see {target.run_link(run.run_id)}")
