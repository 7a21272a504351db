"""File locks of the experiment memory: one writing process (writer.lock), and operations that readers'
snapshots do not cut in half (io.lock). See memory.store for the layout."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from memory.errors import MemoryLockedError


def _open_lock_file(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a+")


def _acquire_writer_lock(path: Path) -> IO[str]:
    fh = _open_lock_file(path)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise MemoryLockedError(
            f"the experiment memory at {path.parent} is already open for writing by {holder}; only one process "
            "(the loop) may write it. Open it with read_only=True to search it meanwhile."
        ) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}")
    fh.flush()
    return fh


@contextlib.contextmanager
def _flocked(fh: IO[str], mode: int) -> Iterator[None]:
    """Hold a flock for a block. Blocking: the writer holds io.lock for one operation at a time (milliseconds),
    and a blocked waiter is woken the moment it is released, where polling would starve behind a busy writer."""
    fcntl.flock(fh, mode)
    try:
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)


def _forget_failed_client(chroma_dir: Path) -> None:
    """Chroma caches one System per directory and keeps it even when starting it failed (a corrupted
    sqlite file), so the next client for that directory would reuse the broken one. Drop it (chromadb 1.5)."""
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient._identifier_to_system.pop(str(chroma_dir), None)
