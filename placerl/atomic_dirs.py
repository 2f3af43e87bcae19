"""Replace and delete directories so that a kill at any instant damages nothing.

Every name a reader trusts (``checkpoints/step_000123``, ``policy``, ``config.yaml``) only ever
appears or disappears by ``rename``, which is atomic. The helpers name their temporaries
``.tmp-NAME-PID`` (being written), ``.old-NAME-PID`` (the previous version, moved aside while
the new one is renamed in) and ``.trash-NAME-PID`` (being deleted). ``clean_leftovers`` runs at
the start of every ``placerl train``: the temporaries of processes that are no longer alive are
deleted, except an ``.old-NAME`` whose ``NAME`` is missing — a kill between the two renames of a
replacement without ``renameat2`` — which is renamed back, being the last complete version.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import shutil
import sys
from pathlib import Path

_LEFTOVER = re.compile(r"^\.(tmp|old|trash)-(.+)-(\d+)$")
# placerl/logging.py rewrites metrics/timeline files through ``mkstemp(prefix=".NAME.",
# suffix=".tmp")``: no pid in the name, but only one process writes a run directory at a time
_JSONL_REWRITE = re.compile(r"^\.[\w-]+\.jsonl\.\w+\.tmp$")


def temp_name(path: Path, kind: str) -> Path:
    """``path``'s sibling ``.KIND-NAME-PID`` (kind: tmp, old or trash)."""
    return path.with_name(f".{kind}-{path.name}-{os.getpid()}")


def remove(path: Path) -> None:
    """Delete ``path`` (a file or a directory tree) by first renaming it out of its name, so a
    kill mid-delete leaves a ``.trash-*`` leftover, never a half-deleted ``NAME``."""
    if not path.exists() and not path.is_symlink():
        return
    trash = temp_name(path, "trash")
    path.rename(trash)
    _delete(trash)


def replace(new: Path, path: Path) -> None:
    """Put the complete ``new`` at ``path`` and delete the old version. On Linux the two are
    swapped in one atomic ``renameat2(RENAME_EXCHANGE)``, so ``path`` always exists; elsewhere
    the old version is renamed aside first (``clean_leftovers`` renames it back if a kill
    comes between the two renames)."""
    _fsync_dir(new.parent)
    if path.exists() and _exchange(new, path):
        _fsync_dir(path.parent)
        remove(new)  # now the old version
    elif path.exists():
        old = temp_name(path, "old")
        _delete(old)
        path.rename(old)
        new.rename(path)
        _fsync_dir(path.parent)
        _delete(old)
    else:
        new.rename(path)
        _fsync_dir(path.parent)


def write_text(path: Path, text: str) -> None:
    """Write a small file atomically (``.tmp-NAME-PID``, then rename over the old one)."""
    tmp = temp_name(path, "tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def clean_leftovers(directory: Path) -> list[str]:
    """Remove the temporaries of dead processes in ``directory``; returns what was done."""
    if not directory.is_dir():
        return []
    done = []
    for path in sorted(directory.iterdir()):
        if _JSONL_REWRITE.match(path.name) and path.is_file():
            path.unlink()
            done.append(f"removed {path}, left by a killed process")
            continue
        match = _LEFTOVER.match(path.name)
        if match is None or _alive(int(match.group(3))):
            continue
        kind, name = match.group(1), match.group(2)
        target = directory / name
        if kind == "old" and not target.exists():
            path.rename(target)
            done.append(f"restored {target} from {path.name}, left by a process killed mid-replace")
        else:
            _delete(path)
            done.append(f"removed {path}, left by a killed process (pid {match.group(3)})")
    return done


def fsync_tree(path: Path) -> None:
    """Flush every file under ``path`` to disk before it is renamed into place."""
    for file in path.rglob("*"):
        if file.is_file():
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())


def _alive(pid: int) -> bool:
    """Whether ``pid`` is another live process (our own pid is a previous process's reuse:
    this process has written nothing yet when the leftovers are cleaned)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where that is not available."""
    libc = _libc()
    if libc is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EPERM):
        return False  # kernel or filesystem without exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(a), None, str(b))


@functools.cache
def _libc():
    if sys.platform != "linux":
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.renameat2.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint,
        ]
    except (OSError, AttributeError):
        return None
    return libc


def _delete(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
