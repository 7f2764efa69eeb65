"""Scratch folders of a run (today the fidelity store, run/fidelity.run_store_dir): one per
run, owned through an exclusive lock on `<folder>.lock` that the owning process holds until it
ends. The kernel drops a lock with its process, however it died (kill -9 included), so a later
run that can take a folder's lock knows the owner is dead and removes the folder.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from pathlib import Path

# A folder without a lock file (from before locks, or a Ray node's copy) is removed once it is
# older than this: no run lasts that long without writing to it.
UNLOCKED_MAX_AGE_S = 7 * 24 * 3600.0


def _lock_path(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _try_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on `path` (created if missing), or None if held."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


class Scratch:
    """The folder `path`, owned by this process until release()."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = _try_lock(_lock_path(path))
            if fd is None:
                raise RuntimeError(f"scratch folder {path} is owned by a live process")
            # Another run removing stale folders may have unlinked the file between our open
            # and our lock: hold the lock on the file that is there now.
            try:
                if os.stat(_lock_path(path)).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self._fd: int | None = fd
        path.mkdir(exist_ok=True)

    def release(self) -> None:
        """Removes the folder and its lock file."""
        shutil.rmtree(self.path, ignore_errors=True)
        if self._fd is not None:
            _lock_path(self.path).unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def remove_stale(parent: Path, now: float | None = None) -> list[Path]:
    """Removes the folders under `parent` whose owner is dead; returns them."""
    if not parent.is_dir():
        return []
    now = time.time() if now is None else now
    removed: list[Path] = []
    for lock in sorted(parent.glob("*.lock")):
        fd = _try_lock(lock)
        if fd is None:
            continue  # its run is alive
        try:
            folder = lock.with_name(lock.name.removesuffix(".lock"))
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(folder)
        finally:
            os.close(fd)
    for folder in sorted(p for p in parent.iterdir() if p.is_dir()):
        if _lock_path(folder).exists():
            continue
        try:
            age = now - folder.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > UNLOCKED_MAX_AGE_S:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
