"""The novelty gate's verdicts, and the normalised diff hash of changes recorded before fingerprints existed.

Two checks refuse an experiment that was already tried (memory.gate decides, this module words it):
- before coding, the idea is judged against past experiments (memory.gate: its structured changes, or an LLM);
- after coding, the change's fingerprint (memory.fingerprint) equals a past experiment's; records from
  before fingerprints are matched by `normalised_diff_hash`.

A deliberate retry (`Idea.retry_of`) of an experiment that crashed or was skipped is let through, and the
verdict says so.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tokenize
from collections.abc import Sequence
from dataclasses import dataclass, field

from memory.records import MemoryHit

# The least similarity at which an experiment found by embedding is shown to the judge. Low on purpose: the
# embedding only retrieves (near-misses score above true paraphrases); experiments that change the same knobs
# are found by their reading whatever their similarity.
DEFAULT_THRESHOLD = 0.3

RETRYABLE_STATUSES = ("crash", "skipped")


@dataclass
class NoveltyVerdict:
    novel: bool
    kind: str  # "novel" | "exact" | "semantic" | "retry"
    similarity: float
    match: MemoryHit | None
    message: str
    related: list[MemoryHit] = field(default_factory=list)  # similar past experiments that are not repeats
    judged_by: str = ""  # "structure", "reading", "llm <model>", "fingerprint"

    @property
    def context(self) -> str:
        """The related past experiments as context for the coder (empty when there are none)."""
        if not self.related:
            return ""
        lines = ["Similar past experiments (not repeats of this idea; learn from them):"]
        for hit in self.related[:3]:
            change = hit.describe_change()
            lines.append(f"- {hit.cite()}: {hit.title}" + (f" [{change}]" if change else "")
                         + (f"; lesson: {hit.lesson}" if hit.lesson else ""))
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- exact


def normalise_source(text: str) -> list[str]:
    """Python source as logical lines of tokens: comments, blank lines, indentation width and spacing
    inside a line do not matter; indentation depth does (it changes meaning)."""
    try:
        return _normalise_tokens(text)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        # a fragment that does not tokenise: fall back to a line-based approximation
        lines = (re.sub(r"\s+", " ", re.sub(r"#.*", "", line)).strip() for line in text.splitlines())
        return [line for line in lines if line]


def _normalise_tokens(text: str) -> list[str]:
    lines: list[str] = []
    current: list[str] = []
    depth = 0
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in skip:
            continue
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            if current:
                lines.append(f"{depth}|" + " ".join(current))
            current = []
        else:
            current.append(tok.string)
    if current:
        lines.append(f"{depth}|" + " ".join(current))
    return lines


def normalised_diff_hash(old_text: str, new_text: str) -> str:
    """sha256 of the lines removed and added, after normalisation: the same edit hashes the same whatever
    its whitespace, comments or position in the file."""

    old_lines, new_lines = normalise_source(old_text), normalise_source(new_text)
    changes: list[str] = []
    matcher = difflib.SequenceMatcher(a=old_lines, b=new_lines, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            continue
        changes.extend("-" + line for line in old_lines[a0:a1])
        changes.extend("+" + line for line in new_lines[b0:b1])
    return hashlib.sha256("\n".join(changes).encode()).hexdigest()


# ------------------------------------------------------------------------------------------- verdicts


def novel_verdict(nearest: MemoryHit | None = None, reason: str = "", related: Sequence[MemoryHit] = (),
                  judged_by: str = "") -> NoveltyVerdict:
    note = ""
    if nearest is not None:
        note = f"; nearest is {nearest.cite()} at similarity {nearest.similarity:.2f}"
        if reason:
            note += f", a different experiment: {reason}"
    elif reason:
        note = f"; {reason}"
    return NoveltyVerdict(True, "novel", nearest.similarity if nearest else 0.0, None, f"novel{note}",
                          list(related), judged_by)


def idea_verdict(match: MemoryHit | None, reason: str, retry_of: str | None, cited: MemoryHit | None,
                 nearest: MemoryHit | None, related: Sequence[MemoryHit] = (), judged_by: str = "") -> NoveltyVerdict:
    """Decide on an idea given the past experiment judged the same (or None) and, for a retry, the one it cites."""
    if match is None:
        if retry_of and cited is not None and cited.status in RETRYABLE_STATUSES:
            return NoveltyVerdict(True, "retry", 0.0, cited, f"retry of {cited.cite()}, which did not complete",
                                  list(related), judged_by)
        return novel_verdict(nearest, reason, related, judged_by)
    if retry_of and cited is not None and cited.status in RETRYABLE_STATUSES and match.status in RETRYABLE_STATUSES:
        return NoveltyVerdict(True, "retry", match.similarity, cited,
                              f"retry admitted: {cited.cite()} did not complete, so the idea was never measured",
                              list(related), judged_by)
    message = _refusal(match, retry_of, cited, semantic=True, reason=reason)
    return NoveltyVerdict(False, "semantic", match.similarity, match, message, list(related), judged_by)


def diff_verdict(matches: Sequence[MemoryHit], retry_of: str | None = None) -> NoveltyVerdict:
    """Decide on a coded change given the earlier tried experiments with the same fingerprint (or diff hash)."""
    if not matches:
        return novel_verdict(judged_by="fingerprint")
    completed = [m for m in matches if m.status not in RETRYABLE_STATUSES]
    if not completed and retry_of and any(m.exp_id == retry_of or m.id == retry_of for m in matches):
        cited = next(m for m in matches if m.exp_id == retry_of or m.id == retry_of)
        return NoveltyVerdict(True, "retry", 1.0, cited, f"retry of {cited.cite()} with the same change, which did not complete")
    match = (completed or list(matches))[0]
    return NoveltyVerdict(False, "exact", 1.0, match, _refusal(match, retry_of, None, semantic=False))


def _refusal(match: MemoryHit, retry_of: str | None, cited: MemoryHit | None, *, semantic: bool,
             reason: str = "") -> str:
    how = "the same experiment as" if semantic else "the same change to train.py as"
    lines = [f"repeat: {how} {match.cite()}: {match.title!r}" + (f" ({reason})." if reason else ".")]
    change = match.describe_change()
    if change:
        lines.append(f"Its change: {change}.")
    if match.lesson:
        lines.append(f"Its lesson: {match.lesson.rstrip('.')}.")
    elif match.note:
        lines.append(f"It ended with {match.note.rstrip('.')}.")
    if match.status in RETRYABLE_STATUSES and not retry_of:
        lines.append(f"It did not complete ({match.status}); to retry it on purpose, set retry_of={match.exp_id!r} "
                     "and say in the rationale what is different this time.")
    elif retry_of and cited is None:
        lines.append(f"retry_of={retry_of!r} names no experiment in memory.")
    elif retry_of and cited is not None and cited.status not in RETRYABLE_STATUSES:
        lines.append(f"retry_of cites {cited.cite()}, which completed; only crashed or skipped experiments are retried.")
    else:
        lines.append("Propose a different change.")
    return " ".join(lines)
