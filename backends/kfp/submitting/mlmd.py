"""Read a KFP run's metric values back from ML Metadata (MLMD) over gRPC-web.

Metric values are not part of the KFP v2beta1 REST API (KFP 2.17): a run's task details carry no
output values, and the scalars a task logs into its ``Output[Metrics]`` live only in ML Metadata, as
custom properties of that artifact. They are read here the way the KFP UI reads them: gRPC-web calls to
MLMD's ``MetadataStoreService`` at the root of the host (``/ml_metadata.MetadataStoreService/...``),
which the KFP UI server and the Kubeflow gateway forward to the metadata Envoy proxy. A host that is
the bare API server (port 8888) does not serve that path; submit then says so and names the run.
"""
import functools
import struct
from urllib.parse import unquote, urlsplit

import urllib3
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from backends.kfp.submitting.endpoint import CONNECT_S, READ_S, KfpError, Target, auth_hint
from mmclf.errors import ResultNotHere

METRICS_OUTPUT = "metrics"  # the produce-metrics task's Output[Metrics] parameter name
_RUN_CONTEXT_TYPE = "system.PipelineRun"  # KFP's MLMD context per run, named by the run id
_MLMD_SERVICE = "ml_metadata.MetadataStoreService"


# --- MLMD over gRPC-web: the metric values ------------------------------------------------------

# A subset of ml_metadata/proto/metadata_store.proto and metadata_store_service.proto (MLMD as shipped
# with KFP 2.x): same package, message names and field numbers. Fields not listed are skipped as
# unknown when a response is parsed.
_MLMD_FIELDS = {
    "Value": [("int_value", 1, "int64"), ("double_value", 2, "double"), ("string_value", 3, "string")],
    "Artifact": [("id", 1, "int64"), ("type", 8, "string"), ("custom_properties", 5, "map:Value")],
    "Context": [("id", 1, "int64"), ("name", 3, "string")],
    "GetContextByTypeAndNameRequest": [("type_name", 1, "string"), ("context_name", 2, "string")],
    "GetContextByTypeAndNameResponse": [("context", 1, "Context")],
    "GetArtifactsByContextRequest": [("context_id", 1, "int64")],
    "GetArtifactsByContextResponse": [("artifacts", 1, "repeated:Artifact")],
}


def _add_field(message: descriptor_pb2.DescriptorProto, name: str, number: int, kind: str) -> None:
    """Add field ``name`` of ``kind``: a scalar, a message name, "repeated:<message>" or "map:<message>"."""
    fdp = descriptor_pb2.FieldDescriptorProto
    label, _, type_name = kind.rpartition(":")
    new = message.field.add(name=name, number=number, label=fdp.LABEL_OPTIONAL)
    scalar = getattr(fdp, f"TYPE_{type_name.upper()}", None)
    if scalar is not None:
        new.type = scalar
        return
    new.type, new.type_name = fdp.TYPE_MESSAGE, f".ml_metadata.{type_name}"
    if label == "repeated":
        new.label = fdp.LABEL_REPEATED
    elif label == "map":  # protobuf encodes map<string, V> as a repeated nested key/value entry message
        entry = message.nested_type.add(name="".join(part.title() for part in name.split("_")) + "Entry")
        entry.options.map_entry = True
        entry.field.add(name="key", number=1, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_STRING)
        entry.field.add(name="value", number=2, label=fdp.LABEL_OPTIONAL, type=fdp.TYPE_MESSAGE,
                        type_name=new.type_name)
        new.label, new.type_name = fdp.LABEL_REPEATED, f".ml_metadata.{message.name}.{entry.name}"


@functools.cache
def _mlmd_messages() -> dict:
    """Message classes for _MLMD_FIELDS, built in a private descriptor pool (the ml-metadata package
    is not a dependency, and a private pool cannot clash with it)."""
    file = descriptor_pb2.FileDescriptorProto(name="mmclf/mlmd_subset.proto", package="ml_metadata",
                                              syntax="proto2")
    for name, fields in _MLMD_FIELDS.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind in fields:
            _add_field(message, field_name, number, kind)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ml_metadata.{name}"))
            for name in _MLMD_FIELDS}


class MetricsNotReadBack(KfpError, ResultNotHere):
    """The run SUCCEEDED, but its metric values could not be read from ML Metadata: the job record says
    ``succeeded_without_metrics``, not failed; the message says where metrics.json is."""


class _Unreadable(Exception):
    """Why the metric values could not be read (read_metrics turns it into MetricsNotReadBack)."""


def _grpc_web_frames(body: bytes):
    """Yield (flags, payload) for each length-prefixed frame of a gRPC-web body."""
    offset = 0
    while offset + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[offset:offset + 5])
        yield flags, body[offset + 5:offset + 5 + length]
        offset += 5 + length


def _grpc_web_answer(body: bytes, headers) -> tuple[bytes, str, str]:
    """(message bytes, grpc-status, grpc-message) of a gRPC-web response."""
    # A trailers-only answer (an error without a message) carries the status in the HTTP headers.
    trailers = {key.lower(): value for key, value in headers.items()}
    message = b""
    for flags, payload in _grpc_web_frames(body):
        if flags & 0x80:  # the trailer frame: "name:value" lines
            for line in payload.decode("utf-8", "replace").splitlines():
                key, _, value = line.partition(":")
                trailers[key.strip().lower()] = value.strip()
        else:
            message = payload
    return message, trailers.get("grpc-status", "2"), unquote(trailers.get("grpc-message", ""))


def _mlmd_call(target: Target, method: str, request, response_class):
    """One unary MetadataStoreService call over gRPC-web; _Unreadable unless it answers OK."""
    origin = urlsplit(target.host)
    url = f"{origin.scheme}://{origin.netloc}/{_MLMD_SERVICE}/{method}"
    body = request.SerializeToString()
    headers = {"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1", **target.auth_headers()}
    try:
        answer = urllib3.request("POST", url, body=struct.pack(">BI", 0, len(body)) + body, headers=headers,
                                 timeout=urllib3.Timeout(connect=CONNECT_S, read=READ_S), retries=False)
    except urllib3.exceptions.HTTPError as exc:
        raise _Unreadable(f"cannot reach {url} ({exc})") from exc
    if answer.status in (401, 403):
        raise _Unreadable(f"{url} refused auth (HTTP {answer.status}); {auth_hint(target)}")
    content_type = answer.headers.get("Content-Type", "")
    if answer.status != 200 or not content_type.startswith("application/grpc-web"):
        raise _Unreadable(
            f"{url} is not ML Metadata's gRPC-web proxy (HTTP {answer.status}, {content_type or 'no content type'}); "
            "point backend.host at the KFP UI (e.g. kubectl port-forward svc/ml-pipeline-ui 8080:80) "
            "or at the Kubeflow gateway rather than at the bare API server")
    message, status, detail = _grpc_web_answer(answer.data, answer.headers)
    if status != "0":
        raise _Unreadable(f"ML Metadata answered {method} with gRPC status {status}: {detail}")
    return response_class.FromString(message)


def read_metrics(target: Target, run_id: str, metrics_file: str) -> dict:
    """The scalars of the run's ``metrics`` output in MLMD; MetricsNotReadBack, naming ``metrics_file``
    (where the run left metrics.json), when they cannot be read."""
    try:
        return _read_metrics(target, run_id)
    except _Unreadable as why:
        raise MetricsNotReadBack(f"KFP run {run_id} SUCCEEDED, but its metrics could not be read back: {why}. They "
                                 f"are on the run page {target.run_link(run_id)} and in {metrics_file}") from None


def _read_metrics(target: Target, run_id: str) -> dict:
    """The scalars in the custom properties of the run's ``metrics`` output artifact in MLMD.

    KFP attributes each output artifact to the run's MLMD context and names it after the output in
    the ``display_name`` custom property; Metrics.log_metric values are stored as double values."""
    messages = _mlmd_messages()
    context = _mlmd_call(target, "GetContextByTypeAndName",
                         messages["GetContextByTypeAndNameRequest"](type_name=_RUN_CONTEXT_TYPE, context_name=run_id),
                         messages["GetContextByTypeAndNameResponse"]).context
    if not context.HasField("id"):
        raise _Unreadable("ML Metadata holds no context for this run")
    artifacts = _mlmd_call(target, "GetArtifactsByContext",
                           messages["GetArtifactsByContextRequest"](context_id=context.id),
                           messages["GetArtifactsByContextResponse"]).artifacts
    metrics = {}
    for artifact in artifacts:
        properties = artifact.custom_properties
        if "display_name" in properties and properties["display_name"].string_value == METRICS_OUTPUT:
            metrics.update({key: value.double_value for key, value in properties.items()
                            if value.HasField("double_value")})
    if not metrics:
        raise _Unreadable(f"ML Metadata holds no scalar values in an output named {METRICS_OUTPUT!r} for it "
                          "(Output[Metrics] + log_metric)")
    return dict(sorted(metrics.items()))
