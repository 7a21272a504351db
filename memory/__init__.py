"""Long-horizon memory: every experiment of every run in a repository, in a persistent Chroma collection.

Importing this package registers the offline embedding function with Chroma, so any process can reopen
a collection it did not create.
"""

from memory.embeddings import MiniLMEmbedding  # noqa: F401  (the import registers it with Chroma)
from memory.novelty import DEFAULT_THRESHOLD, NoveltyVerdict, normalised_diff_hash
from memory.records import MemoryHit
from memory.store import (
    ExperimentMemory,
    MemoryLockedError,
    MemoryNotFoundError,
    MemoryStoreError,
    MemoryUnavailableError,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "ExperimentMemory",
    "MemoryHit",
    "MemoryLockedError",
    "MemoryNotFoundError",
    "MemoryStoreError",
    "MemoryUnavailableError",
    "NoveltyVerdict",
    "normalised_diff_hash",
]
