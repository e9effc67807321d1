"""The facts every call to a KFP server shares: which host, how to authenticate, and the errors.

client (runs and experiments over REST) and mlmd (metric values over gRPC-web) both take a
``Target`` and raise ``KfpError``.

The bearer token is sent in a header and nowhere else: never logged, printed or put in a message.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

from omegaconf import DictConfig

from mmclf.errors import ConfigError, MMClfError, StepFailed

CONNECT_S, READ_S = 5.0, 30.0  # timeouts of the calls made to the server, so a dead host fails in seconds


class KfpError(MMClfError):
    """The KFP server cannot be reached or refuses a request."""


class KfpRunFailed(KfpError, StepFailed):
    """The KFP run ended without succeeding."""


@dataclass(frozen=True)
class Target:
    """The API host, how to authenticate, and the pipeline file to point at when submitting fails."""

    host: str
    token_env: Optional[str]
    namespace: Optional[str]
    pipeline_file: Optional[Path]  # None: nothing to submit (the preflight's health check)
    token: Optional[str] = field(default=None, repr=False)  # kept out of reprs and tracebacks

    def run_link(self, run_id: str) -> str:
        return f"{self.host}/#/runs/details/{run_id}"

    def auth_headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


# --- configuration ------------------------------------------------------------------------------


def host_from_config(cfg: DictConfig) -> Optional[str]:
    """``backend.host`` or $KF_PIPELINES_ENDPOINT as kfp.Client takes it (https when no scheme is
    given, no trailing slash), or None when neither is set; ConfigError for a URL no client can use."""
    if cfg.host:
        return _normalize_host("backend.host", cfg.host)
    if os.environ.get("KF_PIPELINES_ENDPOINT"):
        return _normalize_host("$KF_PIPELINES_ENDPOINT", os.environ["KF_PIPELINES_ENDPOINT"])
    return None


def target_from_config(pipeline_file: Optional[Path], cfg: DictConfig) -> Target:
    """Host and token from the backend config (and environment); ConfigError names what is missing."""
    host = host_from_config(cfg)
    if not host:
        raise ConfigError(f"backend.mode={cfg.mode} needs the KFP API host: set backend.host=<url> "
                          "or the KF_PIPELINES_ENDPOINT environment variable")
    return Target(host=host, token_env=cfg.token_env, namespace=cfg.namespace or None,
                  pipeline_file=pipeline_file, token=read_token(cfg.token_env))


def _normalize_host(source: str, host: str) -> str:
    url = host.strip() if "://" in host else f"https://{host.strip()}"
    example = f"e.g. {'backend.host=' if source == 'backend.host' else 'KF_PIPELINES_ENDPOINT='}http://localhost:8080"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{source}={host!r}: a KFP host is an http:// or https:// URL, {example}")
    try:
        port_ok = parts.hostname is not None and (parts.port is None or parts.port > 0)
    except ValueError:  # a port that is not a number, or out of range
        port_ok = False
    if not port_ok or parts.username is not None or parts.query or parts.fragment:
        raise ConfigError(f"{source}={host!r}: not a host URL (a host name, an optional port and path; no "
                          f"user, query or fragment: tokens go in backend.token_env), {example}")
    return url.rstrip("/")


def read_token(token_env: Optional[str]) -> Optional[str]:
    """The bearer token in $``token_env``; ConfigError when the variable is named but empty."""
    if not token_env:
        return None
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise ConfigError(f"backend.token_env={token_env}, but ${token_env} is unset or empty: "
                          f"export the bearer token in {token_env}, or set backend.token_env=null")
    return token


# --- errors -------------------------------------------------------------------------------------


def auth_hint(target: Target) -> str:
    if not target.token_env:
        return ("no token was sent: set backend.token_env to the name of an environment variable "
                "that holds a bearer token for this server")
    access = f" and may access namespace {target.namespace!r} (backend.namespace)" if target.namespace else ""
    return f"check that the bearer token in ${target.token_env} (backend.token_env) is valid{access}"
