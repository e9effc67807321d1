"""The volume-permissions task: make a fresh volume's root writable for the step pods' user.

    python -m backends.kfp.volume.permissions MOUNT_PATH UID GID      (the task runs it as root, before prepare-data)

A freshly provisioned volume's root often belongs to root with mode 0755 (every block-disk class,
some file classes), while the step pods run as the image's user (uid 1000). kfp-kubernetes 2.17 can
set a task's runAsUser but no fsGroup, so Kubernetes will not hand the volume over; this task does.
Since KFP 2.16 every user container drops all Linux capabilities, so root here may not chown
(CAP_CHOWN) but may chmod what it owns: chown where allowed, else open the folder to all users.
A folder already writable for the uid is left alone, so a claim prepared by hand keeps its modes.
A folder this task cannot change is a refusal: one line naming it and the fix, exit status 2.
"""
import os
import stat
import sys
from pathlib import Path

from backends.kfp.volume.layout import VolumeLayout
from mmclf.errors import MMClfError, one_line_errors


class VolumeNotWritable(MMClfError):
    """The shared volume refuses the step pods' user."""


def writable_for(path: Path, uid: int, gid: int) -> bool:
    """Whether ``uid``/``gid`` may create files in ``path``, by its owner, group and mode bits."""
    info = path.stat()
    if info.st_uid == uid:
        return info.st_mode & 0o300 == 0o300
    if info.st_gid == gid:
        return info.st_mode & 0o030 == 0o030
    return info.st_mode & 0o003 == 0o003


def make_writable(path: Path, uid: int, gid: int) -> str:
    """Make ``path`` writable for ``uid``/``gid``; say how, or raise PermissionError."""
    if writable_for(path, uid, gid):
        return "already writable"
    try:
        os.chown(path, uid, gid)
        return f"chown {uid}:{gid}"
    except PermissionError:  # no CAP_CHOWN: the owner may still chmod
        os.chmod(path, stat.S_IMODE(path.stat().st_mode) | 0o777)
        return "chmod a+rwx"


def make_volume_writable(mount: Path, uid: int, gid: int) -> None:
    """Make the volume at ``mount`` and the folders the runs keep there writable for ``uid``/``gid``."""
    for folder in VolumeLayout(str(mount)).folders:
        path = Path(folder)
        if not path.is_dir():
            continue  # runs/ and data/ are made by the steps, as their user
        try:
            print(f"volume-permissions: {path}: {make_writable(path, uid, gid)}", flush=True)
        except PermissionError as err:
            raise VolumeNotWritable(
                f"{path} is owned by uid {path.stat().st_uid} with mode {stat.filemode(path.stat().st_mode)}, and this "
                f"task (uid {os.getuid()}) cannot change that ({err.strerror}); make it writable for uid {uid} once "
                f"(chown {uid}:{gid} from a node or a privileged pod, or an NFS export owned by that uid), then set "
                "backend.volume.make_writable=false") from None


def main(argv=None) -> None:
    mount, uid, gid = sys.argv[1:] if argv is None else argv
    with one_line_errors():
        make_volume_writable(Path(mount), int(uid), int(gid))


if __name__ == "__main__":
    main()
