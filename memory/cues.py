"""Techniques described rather than named: "soften the one-hot targets" is label smoothing, "let each head learn
a multiplier on q.k" an attention temperature, "randomly skip whole blocks" stochastic depth.

A cue (`memory.techniques.CUES`) is a few groups of words that, all present within a short stretch of an idea
in any order, mean one concept. Words are compared by stem, and a group may also be met by any phrase that names
a concept (`@attention` is met by "attention", "attn", "self-attention"...), so a cue covers many wordings at
once. A group starting with "!" vetoes the cue when any of its words is in the stretch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from memory.wording import Token, phrase_tokens

_BREAKS = frozenset({",", ";", "and", "plus", "also", "+", "while", "then", "but"})
WINDOW = 12  # tokens a description may spread over


@dataclass(frozen=True)
class Cue:
    concept: str
    groups: tuple[tuple[tuple[str, ...], ...], ...]  # per group: alternatives (token sequences or ("@", concept))
    vetoes: frozenset[str]


def compile_cues(table: Mapping[str, tuple[str, ...]]) -> list[Cue]:
    cues = []
    for concept, descriptions in table.items():
        for description in descriptions:
            groups, vetoes = [], set()
            for group in description.split(" + "):
                group = group.strip()
                if group.startswith("!"):
                    vetoes.update(t for word in group[1:].split("|") for t in phrase_tokens(word))
                    continue
                alternatives = []
                for word in group.split("|"):
                    word = word.strip()
                    if word.startswith("@"):
                        alternatives.append(("@", word[1:]))
                    elif tokens := phrase_tokens(word):
                        alternatives.append(tokens)
                groups.append(tuple(alternatives))
            cues.append(Cue(concept, tuple(groups), frozenset(vetoes)))
    return cues


Span = tuple[int, int, frozenset[str]]


def _occurrences(group: tuple[tuple[str, ...], ...], at: dict[str, list[int]], texts: list[str],
                 named: list[frozenset[str]], phrase: list[tuple[int, int]], concept: str) -> list[tuple[int, int, bool]]:
    """Where a group is met (`at`: the positions of each word and of each concept named). Words must not cut into
    a longer phrase naming something else: the "learn" of "learning rate" is no "learned" scale."""
    found = []
    for alternative in group:
        if alternative[0] == "@":
            found += [(i, i + 1, True) for i in at.get("@" + alternative[1], ())]
            continue
        for i in at.get(alternative[0], ()):
            end = i + len(alternative)
            if tuple(texts[i:end]) == alternative and all(
                    i <= phrase[k][0] and phrase[k][1] <= end or concept in named[k] for k in range(i, end)):
                found.append((i, end, False))
    return found


def apply_cues(tokens: tuple[Token, ...], spans: list[Span], cues: list[Cue]) -> tuple[list[Span], frozenset[int]]:
    """The phrase spans with each described technique put in: the concept on the first word of its description,
    the description's other words recognised but meaningless. Also the positions inside descriptions, where a
    clause must not be split ("compute attention and feed-forward from the same input")."""
    texts = [t.text for t in tokens]
    named: list[frozenset[str]] = [frozenset()] * len(tokens)
    phrase = [(i, i + 1) for i in range(len(tokens))]
    for s, e, concepts in spans:
        for i in range(s, e):
            named[i] = concepts
            phrase[i] = (s, e)
    at: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        at.setdefault(text, []).append(i)
        for concept in named[i]:
            at.setdefault("@" + concept, []).append(i)
    claimed: set[int] = set()
    found: list[tuple[int, int, set[int], int, set[int], str]] = []
    for cue in cues:
        occurrences = []
        for group in cue.groups:
            occurrences.append(_occurrences(group, at, texts, named, phrase, cue.concept))
            if not occurrences[-1]:
                break
        if not all(occurrences):
            continue
        best = None
        for anchor in occurrences[0]:  # the tightest choice of one occurrence per group around each anchor
            chosen, used = [anchor], set(range(anchor[0], anchor[1]))
            for options in occurrences[1:]:
                free = [o for o in options if not used & set(range(o[0], o[1]))]
                if not free:
                    break
                pick = min(free, key=lambda o: (max(0, o[0] - anchor[1], anchor[0] - o[1]), o[0] - o[1]))
                chosen.append(pick)
                used |= set(range(pick[0], pick[1]))
            else:
                lo, hi = min(c[0] for c in chosen), max(c[1] for c in chosen)
                # a description stays within its clause, unless it names two parts ("attention and MLP")
                crossed = any(texts[i] in _BREAKS and phrase[i][1] - phrase[i][0] == 1 and i not in used
                              for i in range(lo, hi)) and sum(g[0][0] == "@" for g in cue.groups) < 2
                if hi - lo <= WINDOW and not crossed and not used & claimed and (
                        best is None or hi - lo < best[1] - best[0]):
                    best = (lo, hi, used, anchor[0], {phrase[c[0]][0] for c in chosen if c[2]})
        if best is None or cue.vetoes & set(texts[max(0, best[0] - 3) : best[1] + 3]):
            continue
        claimed |= best[2]
        found.append((best[0], best[1], best[2], best[3], best[4], cue.concept))
    if not found:
        return spans, frozenset()
    used_positions = set().union(*(f[2] for f in found))
    places = set().union(*(f[4] for f in found))  # parts a description names stay where the technique acts
    kept = {s: (s, e, c) for s, e, c in spans if not used_positions & set(range(s, e)) or s in places}
    joined: set[int] = set()
    for lo, hi, used, first, named_parts, concept in found:  # on its first word, where the verb is ("not tied to")
        words = sorted(i for i in used if not any(p <= i < kept[p][1] for p in named_parts if p in kept))
        if first in named_parts and words:
            first = words[0]  # (a part it names keeps its own span)
        s, e, concepts = kept.get(first, (first, first + 1, frozenset()))
        kept[first] = (s, e, concepts | {concept})
        for i in sorted(used):
            if not any(s <= i < e for s, e, _ in kept.values()):
                kept[i] = (i, i + 1, frozenset())
        joined.update(range(lo, hi))
    return sorted(kept.values()), frozenset(joined)
