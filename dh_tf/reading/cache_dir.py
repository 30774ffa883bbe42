"""Where an epoch cache lives: the default directory, the room check, the owner lock, stale caches.

NOTE [ Cache directories ]
A loader's cache is one directory ``dh_tf-cache-<pid>-<random>`` in its parent (``cache=True``:
:func:`default_cache_root`, not /tmp, which is often memory). The loader's constructor only checks
(:func:`check_room`): the parent's free space (``statvfs``) covers the cache, and a cache on
tmpfs/ramfs, which is memory, fits ``MemAvailable``. The directory and files are made when the
first epoch starts (:class:`CacheFiles`). Each cache directory holds ``owner.lock``,
naming the owning process and ``flock``-ed for the cache's life; the lock is taken before the
file appears under that name, so a cache being made is never taken for a stale one. A lock dies
with its process (a reused pid cannot keep a dead cache alive), so when a cache is made, the caches
beside it whose lock nobody holds were left by killed processes and are removed
(:func:`remove_stale`); ``close()`` and garbage collection remove the others.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil
from pathlib import Path

from dh_tf.errors import CacheSpaceError

CACHE_PREFIX = "dh_tf-cache-"
"""Every cache directory's name starts with this; nothing else in a parent is ever removed."""
LOCK_FILE = "owner.lock"
RAM_FILE_SYSTEMS = ("tmpfs", "ramfs")
"""File systems whose files are memory: a cache there must fit ``MemAvailable``."""
SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""The ``OSError`` numbers that mean "no room": raised as :class:`~dh_tf.errors.CacheSpaceError`."""


def default_cache_root() -> Path:
    """The parent of ``cache=True`` caches: ``$XDG_CACHE_HOME/dh_tf/epoch-cache``, else ``~/.cache/dh_tf/epoch-cache``.

    Read at each call. As the XDG base directory spec says, an empty or relative ``XDG_CACHE_HOME``
    is ignored.
    """
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "dh_tf" / "epoch-cache"


def existing_ancestor(path: str | os.PathLike[str]) -> Path:
    """``path`` itself if it exists, else its nearest existing parent (where it would be made)."""
    found = Path(path).absolute()
    while not found.exists() and found != found.parent:
        found = found.parent
    return found


def file_system_type(path: str | os.PathLike[str]) -> str:
    """The type of the file system holding ``path`` (``"ext4"``, ``"tmpfs"``, ...); ``""`` if unknown.

    The mount whose mount point is the longest prefix of ``path``'s real path, in this process's
    ``/proc/self/mountinfo`` (the last one listed wins: a later mount hides an earlier one there).
    """
    real = os.path.realpath(path)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as mounts:
            lines = mounts.read().splitlines()
    except OSError:
        return ""
    longest, kind = -1, ""
    for line in lines:
        fields, _, right = line.partition(" - ")
        left = fields.split()
        if len(left) < 5 or not right:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), left[4])  # "\040" is a space
        if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) >= longest:
            longest, kind = len(mount), right.split()[0]
    return kind


def mem_available() -> int | None:
    """``MemAvailable`` from ``/proc/meminfo``, in bytes; None where it cannot be read."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def space_error(where: str, directory: str, nbytes: int, num_rows: int, reason: str,
                code: int = errno.ENOSPC) -> CacheSpaceError:
    """The :class:`~dh_tf.errors.CacheSpaceError` for a cache of ``nbytes`` that does not fit ``directory``."""
    return CacheSpaceError(
        code,
        f"{where}: no room for the epoch cache in {directory!r}: it needs {nbytes} bytes "
        f"({nbytes / 2**20:.1f} MiB) for {num_rows} rows; {reason}",
    )


def free_bytes(directory: str | os.PathLike[str]) -> int:
    """Bytes an unprivileged process may still write on the file system of ``directory`` (or of its nearest parent)."""
    stats = os.statvfs(existing_ancestor(directory))
    return stats.f_bavail * stats.f_frsize


def check_room(directory: str, nbytes: int, num_rows: int, where: str) -> None:
    """Checks, creating nothing, that a cache of ``nbytes`` fits in ``directory`` (NOTE [ Cache directories ]).

    Raises:
        CacheSpaceError: ``directory`` is on tmpfs/ramfs and ``nbytes`` exceeds ``MemAvailable``,
            or its file system has fewer than ``nbytes`` free (the message names both).
    """
    kind = file_system_type(existing_ancestor(directory))
    if kind in RAM_FILE_SYSTEMS:
        available = mem_available()
        if available is not None and nbytes > available:
            raise space_error(where, directory, nbytes, num_rows,
                              f"it is on {kind}, which is memory, and MemAvailable is {available} bytes; "
                              "pass cache=<a directory on a disk>")
    if kind != "ramfs":  # ramfs has no size: statvfs says 0 free
        free = free_bytes(directory)
        if nbytes > free:
            raise space_error(where, directory, nbytes, num_rows,
                              f"free {free} bytes there, or pass cache=<a directory on a bigger disk>")


class CacheFiles:
    """A cache's directory, owner lock and one file per field, once :meth:`make` made them.

    Not thread-safe: the epoch cache calls :meth:`make` under its lock, :meth:`remove` when no
    thread uses the files (NOTE [ Closing a cache in use ] in ``reading/epoch_cache.py``).
    """

    def __init__(self) -> None:
        self.directory: str | None = None
        self.lock_fd = -1
        self.fds: list[int] = []

    def make(self, directory: str, sizes: list[int]) -> None:
        """Makes ``directory`` (its parent too if missing, after :func:`remove_stale` there), locked, and
        ``field<i>.bin`` of ``sizes[i]`` bytes reserved in it.

        Raises:
            OSError: something could not be made or reserved; what was made is removed first.
        """
        parent = os.path.dirname(directory)
        try:
            os.makedirs(parent, exist_ok=True)
            remove_stale(parent)
            os.mkdir(directory, 0o700)
            self.directory = directory
            pending = os.path.join(directory, LOCK_FILE + ".new")
            self.lock_fd = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(self.lock_fd, f"pid {os.getpid()}\n".encode())
            os.rename(pending, os.path.join(directory, LOCK_FILE))  # visible under its name once locked
            for index, size in enumerate(sizes):
                self.fds.append(os.open(os.path.join(directory, f"field{index}.bin"),
                                        os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                if size:
                    _reserve(self.fds[-1], size)
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Closes the files and removes the directory, lock last; safe twice, and before :meth:`make`."""
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds.clear()
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
        if self.lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.lock_fd)
            self.lock_fd = -1


def remove_stale(parent: str) -> list[str]:
    """Removes the caches in ``parent`` whose ``owner.lock`` no process holds; returns their paths.

    A cache without a lock file (being made, or made by an older dh_tf) or whose lock cannot be
    opened (another user's) is left alone.
    """
    removed = []
    try:
        entries = [entry for entry in os.scandir(parent) if entry.name.startswith(CACHE_PREFIX)]
    except OSError:
        return removed
    for entry in entries:
        try:
            fd = os.open(os.path.join(entry.path, LOCK_FILE), os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live owner: fails, the cache stays
            shutil.rmtree(entry.path, ignore_errors=True)  # while we hold the lock
            removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def _reserve(fd: int, size: int) -> None:
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        os.ftruncate(fd, size)  # a file system without fallocate: sparse file, checked on write
