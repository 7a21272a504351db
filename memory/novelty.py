"""The novelty gate: refuse an experiment that was already run, before GPU time (and coding) is spent.

Two checks:
- exact: the change to train.py, with whitespace and comments normalised away, hashes the same as an
  earlier experiment's (`normalised_diff_hash`), checked after coding;
- semantic: before coding, the nearest earlier idea is more similar than a calibrated threshold AND the
  two titles agree structurally. Embeddings put "lr 0.04 -> 0.03" and "lr 0.04 -> 0.05" at cosine ~0.95
  although they are different experiments, so the numbers, the code constants (MATRIX_LR), the target
  values after an arrow, the direction of the change (increase/decrease, add/remove) and the named
  alternatives (GELU vs SwiGLU, attention vs MLP) in the titles must agree too.

A deliberate retry (`Idea.retry_of`) of an experiment that crashed or was skipped is let through, and
the verdict says so. Similarity is cosine similarity of unit vectors (1 - Chroma's cosine distance).
"""

from __future__ import annotations

import difflib
import hashlib
import io
import re
import tokenize
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from memory.records import MemoryHit

# Calibrated on tests/data/idea_pairs.jsonl (135 labelled pairs: paraphrases, near-misses, unrelated ideas)
# with MiniLM over "title. rationale" (`calibrate_threshold`): precision 0.98, recall 0.98 there; 0.875 and
# 0.875 on the 24 held-out pairs of idea_pairs_holdout.jsonl (benchmarks/memory_scale.py prints both).
# The threshold is low because the structural check, not the similarity, separates near-misses.
DEFAULT_THRESHOLD = 0.48

RETRYABLE_STATUSES = ("crash", "skipped")


@dataclass
class NoveltyVerdict:
    novel: bool
    kind: str  # "novel" | "exact" | "semantic" | "retry"
    similarity: float
    match: MemoryHit | None
    message: str


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


# --------------------------------------------------------------------------------------------- semantic

_NUMBER = re.compile(r"(?<![A-Za-z_\d.])(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?(%?)(?![A-Za-z_\d])")
_CONSTANT = re.compile(r"\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b")  # MATRIX_LR, WARMUP_RATIO
_ARROW_TARGET = re.compile(r"(?:->|→|=>)\s*([A-Za-z][\w.]*)")
_UP = frozenset(
    "increase increases increasing raise raises raising higher larger bigger longer wider deeper more "
    "add adds adding enable enables introduce double doubles doubling grow tie tied".split()
)
_DOWN = frozenset(
    "decrease decreases decreasing lower lowers lowering reduce reduces reducing smaller shorter narrower "
    "shallower less fewer remove removes removing drop drops dropping disable disables delete halve halves "
    "halving shrink untie untied".split()
)


# Alternatives within one family: two titles that name different members of a family ("GELU" vs "SwiGLU",
# "attention" vs "MLP") are different experiments however close their embeddings are. A title that names
# a family member only on one side says nothing. Phrases are rewritten to one token first.
_PHRASES = {
    r"value[- ]embeddings?": "valueembed",
    r"\blm[- ]head|output head|unembedding|output projection of the model": "lmhead",
    r"\bqkv\b|\bq, ?k,? (?:and )?v\b|query[- ]key[- ]value": "attention",
    r"\brope\b|rotary": "rotary",
    r"multi[- ]query|\bmqa\b": "mqa",
    r"grouped[- ]query|\bgqa\b": "gqa",
    r"feed[- ]?forward|\bffn\b": "mlp",
    r"warmup[- ]stable[- ]decay|\bwsd\b|trapezoid\w*": "trapezoidal",
    r"sliding[- ]window|windowed|\bwindow\b": "window",
    r"\badamw?": "adamw",
    r"squared[- ]relu|relu ?(?:squared|\^2|²)|relu": "relu",
}
_FAMILIES = {
    "activation": {"relu", "gelu", "swiglu", "geglu", "silu", "swish", "leaky"},
    "optimizer": {"muon", "adamw", "lion", "sgd", "sophia", "shampoo", "soap", "adafactor", "nesterov"},
    "normalisation": {"rmsnorm", "layernorm", "batchnorm"},
    "schedule": {"cosine", "linear", "trapezoidal", "inverse", "exponential", "constant"},
    "position encoding": {"rotary", "alibi", "nope", "learned", "absolute", "sinusoidal"},
    "attention span": {"window", "full", "local", "global"},
    "attention heads": {"mqa", "gqa", "mha"},
    "model part": {"attention", "mlp", "embedding", "valueembed", "lmhead", "residual", "logit"},
}


@dataclass(frozen=True)
class TitleSignature:
    """What must agree between two titles for them to name the same experiment."""

    numbers: frozenset[str]
    constants: frozenset[str]
    targets: frozenset[str]
    direction: frozenset[int]
    families: tuple[tuple[str, frozenset[str]], ...]


def title_signature(title: str) -> TitleSignature:
    numbers = set()
    for mantissa, exponent, percent in _NUMBER.findall(title):
        value = float(mantissa) * (10.0 ** int(exponent) if exponent else 1.0) / (100.0 if percent else 1.0)
        numbers.add(f"{value:.6g}")
    lowered = title.lower()
    targets = {t.lower() for t in _ARROW_TARGET.findall(title) if not any(c.isdigit() for c in t)}
    for pattern, token in _PHRASES.items():
        lowered = re.sub(pattern, token, lowered)
    words = {_singular(w) for w in re.findall(r"[a-z][a-z0-9]*", lowered)}
    direction = {1 for w in words if w in _UP} | {-1 for w in words if w in _DOWN}
    families = tuple((name, frozenset(words & members)) for name, members in _FAMILIES.items() if words & members)
    return TitleSignature(
        frozenset(numbers), frozenset(_CONSTANT.findall(title)), frozenset(targets), frozenset(direction), families
    )


def _singular(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def structural_mismatch(title_a: str, title_b: str) -> str:
    """Why two similar titles are still different experiments, or "" when nothing tells them apart."""
    a, b = title_signature(title_a), title_signature(title_b)
    # a title may omit the current value ("weight decay 0.1" vs "WEIGHT_DECAY 0.0 -> 0.1"), so one set of
    # numbers may contain the other; a title without numbers says nothing about values ("before block 0"
    # and "initialised at 1" are incidental, so one-sided numbers are no evidence either way)
    if a.numbers and b.numbers and not (a.numbers <= b.numbers or b.numbers <= a.numbers):
        return f"different values ({_names(a.numbers)} vs {_names(b.numbers)})"
    if a.constants and b.constants and a.constants != b.constants:
        return f"different parameters ({_names(a.constants)} vs {_names(b.constants)})"
    if a.targets and b.targets and a.targets != b.targets:
        return f"different targets ({_names(a.targets)} vs {_names(b.targets)})"
    if len(a.direction) == 1 and len(b.direction) == 1 and a.direction != b.direction:
        return "opposite directions"
    b_families = dict(b.families)
    for family, terms in a.families:
        other = b_families.get(family)
        if other and not (terms <= other or other <= terms):
            return f"different {family} ({_names(terms)} vs {_names(other)})"
    return ""


def _names(values: frozenset[str]) -> str:
    return ", ".join(sorted(values))


def is_semantic_repeat(similarity: float, title_a: str, title_b: str, threshold: float) -> bool:
    return similarity >= threshold and not structural_mismatch(title_a, title_b)


def first_semantic_match(title: str, hits: Iterable[MemoryHit], threshold: float) -> MemoryHit | None:
    """The most similar earlier experiment that counts as the same idea (hits sorted by similarity)."""
    for hit in hits:
        if hit.similarity < threshold:
            return None
        if hit.status != "repeat" and not structural_mismatch(title, hit.title):
            return hit
    return None


# ------------------------------------------------------------------------------------------- verdicts


def novel_verdict(
    similarity: float = 0.0, nearest: MemoryHit | None = None, title: str = "", threshold: float = 1.0
) -> NoveltyVerdict:
    note = ""
    if nearest is not None:
        note = f"; nearest is {nearest.cite()} at similarity {similarity:.2f}"
        differs = structural_mismatch(title, nearest.title) if similarity >= threshold else ""
        if differs:
            note += f", a different experiment: {differs}"
    return NoveltyVerdict(True, "novel", similarity, None, f"novel{note}")


def idea_verdict(
    title: str, retry_of: str | None, hits: Sequence[MemoryHit], threshold: float, cited: MemoryHit | None
) -> NoveltyVerdict:
    """Decide on an idea given its nearest earlier experiments (sorted, most similar first) and, for a
    retry, the experiment it cites."""
    match = first_semantic_match(title, hits, threshold)
    if match is None:
        if retry_of and cited is not None and cited.status in RETRYABLE_STATUSES:
            return NoveltyVerdict(True, "retry", 0.0, cited, f"retry of {cited.cite()}, which did not complete")
        nearest = hits[0] if hits else None
        return novel_verdict(nearest.similarity if nearest else 0.0, nearest, title, threshold)
    if retry_of and cited is not None and cited.status in RETRYABLE_STATUSES and match.status in RETRYABLE_STATUSES:
        return NoveltyVerdict(
            True,
            "retry",
            match.similarity,
            cited,
            f"retry admitted: {cited.cite()} did not complete, so the idea was never measured",
        )
    return NoveltyVerdict(False, "semantic", match.similarity, match, _refusal(match, retry_of, cited, semantic=True))


def diff_verdict(matches: Sequence[MemoryHit], retry_of: str | None = None) -> NoveltyVerdict:
    """Decide on a coded change given the earlier experiments with the same normalised diff hash."""
    if not matches:
        return novel_verdict()
    completed = [m for m in matches if m.status not in RETRYABLE_STATUSES]
    if not completed and retry_of and any(m.exp_id == retry_of or m.id == retry_of for m in matches):
        cited = next(m for m in matches if m.exp_id == retry_of or m.id == retry_of)
        return NoveltyVerdict(True, "retry", 1.0, cited, f"retry of {cited.cite()} with the same change, which did not complete")
    match = (completed or list(matches))[0]
    return NoveltyVerdict(False, "exact", 1.0, match, _refusal(match, retry_of, None, semantic=False))


def _refusal(match: MemoryHit, retry_of: str | None, cited: MemoryHit | None, *, semantic: bool) -> str:
    how = f"similar ({match.similarity:.2f}) to" if semantic else "the same change to train.py as"
    lines = [f"repeat: {how} {match.cite()}: {match.title!r}."]
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


# ---------------------------------------------------------------------------------------- calibration


@dataclass
class GateScore:
    threshold: float
    precision: float
    recall: float
    true_pos: int
    false_pos: int
    false_neg: int


def score_threshold(pairs: Sequence[tuple[float, str, str, bool]], threshold: float) -> GateScore:
    """Precision and recall of refusals over (similarity, title_a, title_b, is_repeat) pairs."""
    tp = fp = fn = 0
    for similarity, title_a, title_b, is_repeat in pairs:
        refused = is_semantic_repeat(similarity, title_a, title_b, threshold)
        tp += refused and is_repeat
        fp += refused and not is_repeat
        fn += is_repeat and not refused
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return GateScore(threshold, precision, recall, tp, fp, fn)


def calibrate_threshold(pairs: Sequence[tuple[float, str, str, bool]], grid_step: float = 0.01) -> GateScore:
    """The threshold with the best F1 over a grid; among ties, the middle of the best plateau, so the choice
    does not sit on the edge of what the labelled set happened to contain."""
    grid = [round(0.30 + i * grid_step, 4) for i in range(int(0.69 / grid_step) + 1)]
    scores = [score_threshold(pairs, t) for t in grid]

    def f1(s: GateScore) -> float:
        return 2 * s.precision * s.recall / (s.precision + s.recall) if s.precision + s.recall else 0.0

    best = max(f1(s) for s in scores)
    plateau = [s for s in scores if f1(s) >= best - 1e-9]
    return plateau[len(plateau) // 2]
