"""Value checks for ``backend=kfp``: a bad volume or resource value stops before anything is compiled.

The typed schema (schema.py) already refused wrong types and unknown keys; these checks
catch values a cluster would only refuse at run time, minutes later, inside a pod.
"""
import re

from omegaconf import DictConfig

from mmclf.errors import ConfigError

# Kubernetes quantities, narrowed to what both Kubernetes and the kfp SDK's own checks accept.
SIZE = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|M|G|T|P|E)?$")  # a volume size, e.g. 20Gi
CPU = re.compile(r"^(\d*\.?\d+)m?$")  # cores or millicores, e.g. 4, 0.5, 500m
MEMORY = re.compile(r"^(\d+(\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|K|M|G|T|P|E)?$")  # e.g. 16Gi, 1.5Gi
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
# A DNS-1123 subdomain: what Kubernetes accepts as a claim name.
CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# CreatePVC names the claim <uuid (36 characters)><suffix>: a DNS-1123 label has at most 63.
PVC_NAME_SUFFIX = re.compile(r"^(-*[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$")
MAX_SUFFIX = 63 - 36


def check_quantity(key: str, value, pattern: re.Pattern, example: str) -> None:
    """``value`` must be a positive quantity that ``pattern`` accepts, such as ``20Gi`` or ``500m``."""
    match = pattern.match(str(value))
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"{key}={value!r}: not a positive Kubernetes quantity; use e.g. {key}={example}")


def check_volume(volume: DictConfig) -> None:
    """Mount path, access modes, size and, per mode, the claim name or PVC name suffix."""
    mount = volume.mount_path
    if not mount.startswith("/") or mount.rstrip("/") == "":
        raise ConfigError(f"backend.volume.mount_path={mount!r}: must be an absolute folder other than /, "
                          "e.g. backend.volume.mount_path=/mnt/mmclf")
    mode = volume.mode
    if mode == "existing":
        if not volume.claim_name or not CLAIM_NAME.match(volume.claim_name):
            raise ConfigError(f"backend.volume.claim_name={volume.claim_name!r}: backend.volume.mode=existing "
                              "mounts a claim made by hand; name it, e.g. backend.volume.claim_name=mmclf-data")
        return
    check_quantity("backend.volume.size", volume.size, SIZE, "20Gi")
    if not volume.access_modes:
        raise ConfigError("backend.volume.access_modes=[]: give at least one, e.g. "
                          "backend.volume.access_modes=[ReadWriteMany]")
    for access_mode in volume.access_modes:
        if access_mode not in ACCESS_MODES:
            raise ConfigError(f"backend.volume.access_modes: {access_mode!r} is not one of {list(ACCESS_MODES)}")
    suffix = volume.pvc_name_suffix
    if mode == "create" and (not PVC_NAME_SUFFIX.match(suffix) or len(suffix) > MAX_SUFFIX):
        raise ConfigError(f"backend.volume.pvc_name_suffix={suffix!r}: up to {MAX_SUFFIX} lower-case letters, "
                          "digits and '-', not ending in '-', e.g. backend.volume.pvc_name_suffix=-mmclf")


def check_resources(resources: DictConfig) -> None:
    """Accelerator count and type, CPU and memory limits of the train and test tasks."""
    count = resources.accelerator_count
    if count < 0:
        raise ConfigError(f"backend.resources.accelerator_count={count}: must be 0 (no accelerator) or more")
    if count > 0 and not resources.accelerator_type:
        raise ConfigError("backend.resources.accelerator_type is empty but accelerator_count="
                          f"{count}; set e.g. backend.resources.accelerator_type=nvidia.com/gpu, or count 0")
    if resources.cpu is not None:
        check_quantity("backend.resources.cpu", resources.cpu, CPU, "4")
    if resources.memory is not None:
        check_quantity("backend.resources.memory", resources.memory, MEMORY, "16Gi")


def check_backend(backend: DictConfig) -> None:
    """Raise ConfigError naming the key for any ``backend.*`` value a cluster would refuse."""
    if not backend.image or any(c.isspace() for c in backend.image):
        raise ConfigError(f"backend.image={backend.image!r}: name the project image, e.g. backend.image=mmclf:latest")
    if backend.retries < 0:
        raise ConfigError(f"backend.retries={backend.retries}: must be 0 (no retry) or more")
    if backend.timeout_s is not None and backend.timeout_s <= 0:
        raise ConfigError(f"backend.timeout_s={backend.timeout_s}: must be positive seconds, or null for no limit")
    if backend.poll_interval_s <= 0:
        raise ConfigError(f"backend.poll_interval_s={backend.poll_interval_s}: must be positive seconds, e.g. 10")
    if backend.component == "container" and backend.wait:
        raise ConfigError("backend.component=container with backend.wait=true: container components fill no KFP "
                          "Metrics artifact, so no metrics could come back; use backend.component=python")
    check_volume(backend.volume)
    check_resources(backend.resources)
