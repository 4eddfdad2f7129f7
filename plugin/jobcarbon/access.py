"""Permission and path problems in plain words: which path, as which user, what to change.

A service runs as SlurmUser and a person runs the same command as themselves; when a
file is out of reach, "Permission denied" alone does not say which of the two is wrong.
``describe`` names the path, the user the command runs as, the first directory on the
way that stops it (with its owner and mode), and what to change.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path


def user_name(uid: int | None = None) -> str:
    """The name of ``uid`` (default: the user this process runs as), or its number."""
    uid = os.geteuid() if uid is None else uid
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def owner_and_mode(path: Path) -> str:
    """``slurm:slurm 0750`` for an existing path."""
    info = path.stat()
    return f"{user_name(info.st_uid)}:{_group_name(info.st_gid)} {stat.S_IMODE(info.st_mode):04o}"


def _blocking(path: Path, write: bool) -> Path | None:
    """The first path on the way to ``path`` that this process cannot use: a directory
    it cannot enter (or, when ``write``, the last one, which it cannot write in), or
    ``path`` itself unreadable (or unwritable); None if nothing on the way stops it."""
    path = path.absolute()
    for directory in reversed(path.parents):  # from / down: each exists() can be asked
        if not directory.exists():
            return None
        need = os.X_OK | (os.W_OK if write and directory == path.parent else 0)
        if not os.access(directory, need):
            return directory
    if path.exists() and not os.access(path, os.R_OK | (os.W_OK if write else 0)):
        return path
    return None


def describe(path: Path, action: str, err: OSError | None = None, write: bool = True) -> str:
    """``cannot <action> <path>: <reason> (running as alice; /var/lib/jobcarbon is
    slurm:slurm 0750): run it as slurm, or give alice access to /var/lib/jobcarbon``."""
    user = user_name()
    reason = f": {err.strerror}" if err is not None and err.strerror else ""
    blocking = _blocking(path, write)
    if blocking is None:
        return f"cannot {action} {path}{reason} (running as {user})"
    owner = user_name(blocking.stat().st_uid)
    advice = (
        f"run it as {owner}, or give {user} access to {blocking} (its group, or a "
        "directory the service can write)"
        if owner != user
        else f"give {user} read and write permission on {blocking} (chmod u+rwx)"
    )
    return (
        f"cannot {action} {path}{reason} (running as {user}; {blocking} is "
        f"{owner_and_mode(blocking)}): {advice}"
    )


def readable_by_others(path: Path) -> str | None:
    """A warning if every user can read ``path`` (its mode and its directory's let them),
    saying what to change; None if not, or if it cannot be told."""
    try:
        info, directory = path.stat(), path.parent.stat()
    except OSError:
        return None
    if not (info.st_mode & stat.S_IROTH and directory.st_mode & stat.S_IXOTH):
        return None
    return (
        f"{path} is readable by every user ({owner_and_mode(path)}, its directory "
        f"{owner_and_mode(path.parent)}), and it names every user's jobs: chmod 0640 "
        f"{path} (and its -wal and -shm files), or chmod 0750 {path.parent}"
    )
