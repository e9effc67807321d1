"""Config paths the pods cannot see: they have the shared volume and their image, not this machine's disk.

Checked before compiling (modes compile, submit and check), on the config the pods would get:
``data.root`` already points at the volume's data folder there, so dataset paths derived from it pass.
"""
from pathlib import PurePosixPath

from mmclf.errors import ConfigError

# Keys that name a file or folder; relative, they would be read from the pod's working directory.
PATH_KEYS = ("resume", "runtime.load_from", "runtime.resume_from", "model.pretrained",
             *(f"data.{split}.{key}" for split in ("train", "val", "test") for key in ("data_prefix", "ann_file")))
NOT_PATHS = {"resume": ("auto", "never"), "model.pretrained": ("zoo",)}  # keywords, not paths


def _leaves(node, prefix=""):
    """(dotted key, value) of every leaf of a config container."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}{key}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}{index}.")
    else:
        yield prefix.rstrip("."), node


def _on_volume(path: str, root: str) -> bool:
    return PurePosixPath(path).is_relative_to(root)


def unseen_paths(pod_config: dict, root: str) -> list[str]:
    """``key=value`` for every path in ``pod_config`` that a pod would not find: an absolute path outside
    the volume mounted at ``root``, or a relative path in one of PATH_KEYS."""
    found = []
    for key, value in _leaves({k: v for k, v in pod_config.items() if k != "backend"}):
        if not isinstance(value, str) or value in NOT_PATHS.get(key, ()) or "://" in value:  # a URL: fetched
            continue
        absolute = value.startswith("/")
        if (absolute and not _on_volume(value, root)) or (key in PATH_KEYS and not absolute):
            found.append(f"{key}={value}")
    return found


def check_pod_paths(pod_config: dict, root: str) -> None:
    """ConfigError naming every path of ``pod_config`` the pods cannot see."""
    unseen = unseen_paths(pod_config, root)
    if unseen:
        raise ConfigError(f"{', '.join(unseen)}: the pods see the shared volume (at {root}) and their image, not "
                          f"this machine's files; copy it onto the volume and point the key under {root}/, or "
                          "use backend.mode=local to run here")
