"""Errors of the experiment memory."""

from __future__ import annotations


class MemoryStoreError(RuntimeError):
    """Base of the experiment memory's errors."""


class MemoryLockedError(MemoryStoreError):
    pass


class MemoryNotFoundError(MemoryStoreError):
    pass


class MemoryUnavailableError(MemoryStoreError):
    pass
