"""Where an idea names things: its clauses, and in each the knobs, techniques and parts it mentions.

A mention is a knob of train.py ("the Muon learning rate"), a quantity train.py derives ("model width"), a
member of a family of alternatives ("SwiGLU"), a technique turned on or off ("dropout"), or words naming a
quantity no knob has. Which verb governs a mention ("drop the blend of the initial embedding") and where a
technique acts ("Nesterov in Muon") are decided here; `memory.reading` turns mentions into changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from memory.cues import apply_cues, compile_cues
from memory.lexicon import GENERIC, HOMES, OFF_WORDS, ON_WORDS, PARTS, QUANTITIES, REPLACE_WORDS, WEAK_WORDS
from memory.techniques import COMPOUNDS, CUES, INTRINSIC_PARTS
from memory.vocabulary import PART_CONCEPTS, Knob, Vocabulary
from memory.wording import PhraseMatcher, Token, stem

OFF = frozenset(stem(w) for w in OFF_WORDS if " " not in w) | {"rid"}
ON = frozenset(stem(w) for w in ON_WORDS if " " not in w) | {stem("use"), stem("try"), stem("switch")}
REPLACE = frozenset(stem(w) for w in REPLACE_WORDS if " " not in w) | {"instead", "rather"}
SEPARATORS = frozenset({",", ";", "and", "plus", "also", "+", "while", "together", "along", "then", "but", "with"})
QUANTITY = frozenset(QUANTITIES)
_WEAK = frozenset(stem(w) for w in WEAK_WORDS)
PREPOSITIONS = frozenset({"on", "to", "for", "in", "of", "at", "into", "onto", "across", "insid"})
_OPERATORS = frozenset({"+", "-"})  # ("6 * d" is a factor of the width)
_TURN = frozenset(stem(w) for w in ("turn", "switch", "take", "leave", "cut", "shut", "kill"))
WITHIN_ATTENTION = {"query": "attention", "key": "attention", "value": "attention"}


# ------------------------------------------------------------------------------------------------ mentions


@dataclass
class Mention:
    kind: str  # "knob" | "derived" | "family" | "switch" | "words"
    name: str
    start: int
    parts: set[str] = field(default_factory=set)
    members: list[tuple[str, bool, int]] = field(default_factory=list)  # family: (member, off, position)
    element: int | None = None
    knob: Knob | None = None
    explicit: bool = False  # the clause is about this mention alone or it has its own verb / value
    weak: bool = False  # named only by a vague word ("decay", "base"): a continuation of a neighbouring clause
    before: tuple[str, ...] = ()  # the words just before it ("at depth 8")
    alias: frozenset[str] = frozenset()  # the concepts that named a knob ("mlp" alone, or "mlp" + "ratio")


_CUES = compile_cues(CUES)


class Spans(list):
    """Recognised phrases (start, end, concepts), and the positions inside descriptions of a technique."""

    def __init__(self, items: Iterable[tuple[int, int, frozenset[str]]], joined: frozenset[int] = frozenset()):
        super().__init__(items)
        self.joined = joined


def spans_of(tokens: tuple[Token, ...], vocab: Vocabulary) -> Spans:
    return _spans(tokens, vocab.matcher)


@lru_cache(maxsize=4096)
def _spans(tokens: tuple[Token, ...], matcher: PhraseMatcher) -> Spans:  # (read-only for callers)
    return Spans(*apply_cues(tokens, matcher.match(tokens), _CUES))


def clauses(tokens: tuple[Token, ...], spans: Spans) -> list[tuple[int, int]]:
    inside = {i for s, e, _ in spans for i in range(s, e) if e - s > 1} | spans.joined
    bounds, depth, start = [], 0, 0
    for i, t in enumerate(tokens):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and i not in inside and t.text in SEPARATORS:
            bounds.append((start, i))
            start = i + 1
    bounds.append((start, len(tokens)))
    return [(s, e) for s, e in bounds if e > s]


def _match_knobs(pool: dict[str, int], vocab: Vocabulary, technique: bool) -> list[tuple[Knob, frozenset[str]]]:
    """Knobs whose aliases the concepts in `pool` name, most specific first, each using its own concepts. Beside a
    technique, a knob named only by a part ("the MLP") is where the technique goes, unless more of its name is
    there ("MLP ratio")."""
    chosen: list[tuple[Knob, frozenset[str]]] = []
    available = set(pool)
    while True:
        best: dict[str, tuple[int, Knob, frozenset[str]]] = {}
        for knob in vocab.knobs.values():
            if any(k is knob for k, _ in chosen):
                continue
            for alias in knob.aliases:
                if not alias <= available:
                    continue
                if alias <= PART_CONCEPTS and technique and not (knob.concepts - alias) & available:
                    continue
                if knob.name not in best or len(alias) > best[knob.name][0]:
                    best[knob.name] = (len(alias), knob, alias)
        if not best:
            return chosen
        size = max(b[0] for b in best.values())
        top = [b for b in best.values() if b[0] == size]
        first = top[0]
        rivals = [b for b in top[1:] if b[2] & first[2]]
        if rivals:  # the same words name several knobs: the one whose own concepts explain most of the pool
            ranked = sorted([first, *rivals], key=lambda b: -len(b[1].concepts & available))
            if len(ranked[0][1].concepts & available) == len(ranked[1][1].concepts & available):
                available -= first[2]  # ambiguous: name none of them
                continue
            first = ranked[0]
        chosen.append((first[1], first[2]))
        available -= first[2]


def find_mentions(tokens: tuple[Token, ...], spans, start: int, end: int, vocab: Vocabulary) -> list[Mention]:
    local = [(s, e, c) for s, e, c in spans if start <= s < end]
    has_number = any(t.kind == "number" for t in masked(tokens, spans, start, end))
    local = _compounds(local, {c for _, _, cs in local for c in cs})
    depth = _paren_depth(tokens, start, end)
    members: dict[str, set[str]] = {}
    switches = 0
    for s, _, concepts in local:
        for c in concepts:
            if ":" in c and not c.startswith("switch:"):
                members.setdefault(c.split(":")[0], set()).add(c)
            elif c.startswith("switch:") and not depth.get(s):
                switches += 1
    mentions: list[Mention] = []
    pool: dict[str, int] = {}
    parts_at: dict[str, int] = {}
    dual: dict[str, tuple[str, bool, int]] = {}  # quantity concept -> the family member the same words name
    weak: set[str] = set()
    part_switch: dict[str, tuple[int, frozenset[str]]] = {}  # "x0 lambdas": a technique, or the scalars of a knob
    technique = switches > 0
    for s, e, concepts in local:
        off = nearest_verb(tokens, s, reach=3) == "off" or switched_off_after(tokens, e - 1)
        fam = [c for c in concepts if ":" in c and not c.startswith("switch:")]
        quantity = {c for c in concepts if c in QUANTITY or c in PARTS}
        if fam and (not quantity or len(members[fam[0].split(":")[0]]) > 1
                    or ((off or governed_by(tokens, s, REPLACE | ON)) and not has_number)):
            technique = True
            _add_member(mentions, fam[0], off, s)
            continue
        if fam:
            for concept in quantity:
                dual[concept] = (fam[0], off, s)
        switch = [c for c in concepts if c.startswith("switch:")]
        if switch and quantity and switches > 1:
            switch = []  # "tie the value embedding to ...": the words name a part beside another technique
        for concept in switch:
            if depth.get(s) and len(local) > 1:
                continue  # "(resid/x0 lambdas)": an aside naming what the main words mean
            if quantity:
                part_switch[concept] = (s, frozenset(quantity))  # decided once the knobs are known
                continue
            mentions.append(Mention("switch", concept, s))
        for concept in quantity:
            if concept in PARTS or concept in PART_CONCEPTS:
                parts_at.setdefault(concept, s)
                pool.setdefault(concept, s)
            elif not (e - s == 1 and tokens[s].text in _WEAK and technique):
                pool.setdefault(concept, s)  # (a lone "decay" beside a technique is the technique's own)
                if e - s == 1 and tokens[s].text in _WEAK:
                    weak.add(concept)
    for knob, alias in _match_knobs(pool, vocab, technique or bool(mentions)):
        at = min(pool[c] for c in alias)
        for part, where in list(parts_at.items()):  # "the attention head dimension": a part naming the knob
            if part not in alias and part in _home(knob) and (where > at or at - where <= 2 and not any(
                    tokens[i].text in PREPOSITIONS for i in range(where, at))):
                parts_at.pop(part)  # ("the residual mixing scalars' learning rate": the scalars live there)
        element = next((i for i, el in enumerate(knob.elements) if el in pool), None)
        mentions.append(Mention("knob", knob.name, at, element=element, knob=knob, weak=alias <= weak,
                                alias=alias))
        for concept in alias | (knob.concepts & set(pool) & (GENERIC | set(knob.elements))):
            pool.pop(concept, None)
            parts_at.pop(concept, None)
    for concept, (at, parts) in part_switch.items():
        if parts <= set(pool):  # no knob took its words: the technique itself
            mentions.append(Mention("switch", concept, at))
    knobs = [m for m in mentions if m.kind == "knob"]
    phases = [m for m in knobs if "warmup" in m.knob.concepts]
    others = [m for m in knobs if m not in phases and "lr" not in m.knob.concepts]
    if len(knobs) == 2 and len(phases) == 1 and others:  # "warm up the Muon momentum": a schedule of another knob
        other = others[0]
        phases[0].parts.add(other.name.lower())
        mentions.remove(other)
    for formula in vocab.derived:
        if formula.concepts <= set(pool) and not any(m.name == formula.solve_for for m in mentions):
            mentions.append(Mention("derived", formula.solve_for, min(pool[c] for c in formula.concepts),
                                     knob=vocab.knobs.get(formula.solve_for)))
            for concept in formula.concepts:
                pool.pop(concept, None)
    knobbed = any(m.kind in ("knob", "derived", "switch") for m in mentions)
    present = {c.split(":", 1)[1] for c in vocab.present}
    for concept, (member, off, at) in dual.items():  # no knob took the words: they name the technique
        if concept not in pool and member.split(":", 1)[1] not in present and not has_number:
            _add_member(mentions, member, off, at)  # "cosine decay": a new schedule, and the decay's knob
        elif concept in pool and not knobbed:
            _add_member(mentions, member, off, at)
            pool.pop(concept)
            parts_at.pop(concept, None)
    techniques = [m for m in mentions if m.kind == "switch" or m.kind == "family" and m.name != "optimizer"]
    if techniques:  # "gains on the RMSNorms", "Nesterov in Muon": what train.py has says where the technique goes
        switched = any(m.kind == "switch" for m in techniques)
        for m in [m for m in mentions if m.kind == "family" and len(m.members) == 1 and techniques != [m]]:
            member, off, at = m.members[0]
            located = _located(tokens, at)
            if f"{m.name}:{member}" in vocab.present and (
                    switched and not off or m.name == "optimizer" and (located or not off) or located and not off):
                mentions.remove(m)
                if m.name == "optimizer":  # the optimizer's group is where it acts
                    parts_at.setdefault(member, at)
                    pool.setdefault(member, at)
    if not mentions and "norm" in parts_at and nearest_verb(tokens, parts_at["norm"], reach=4) == "off":
        present_norm = sorted(c for c in vocab.present if c.startswith("norm_type:"))  # "drop the last norm layer":
        if present_norm:  # the normalisation train.py has, removed
            _add_member(mentions, present_norm[0], True, parts_at.pop("norm"))
            pool.pop("norm", None)
    leftover = {c for c in pool if c in QUANTITY and c not in GENERIC and c not in PARTS}
    if leftover:
        _own_parameters(mentions, pool, leftover, vocab)
        leftover &= set(pool)
    if leftover and not mentions:
        mentions.append(Mention("words", "q:" + "+".join(sorted(leftover)), min(pool[c] for c in leftover)))
    mentions.sort(key=lambda m: m.start)
    for part, at in parts_at.items():
        if part not in pool or depth.get(at) and any(m.kind in ("family", "switch") for m in mentions):
            continue  # a part named in an aside ("(v = lambda*v ...)") is not where a technique goes
        owner = max((m for m in mentions if m.start <= at), key=lambda m: m.start, default=None) or \
            (mentions[0] if mentions else None)
        if owner is not None:
            owner.parts.add(part)
    return mentions


def _own_parameters(mentions: list[Mention], pool: dict[str, int], leftover: set[str], vocab: Vocabulary) -> None:
    """"Make the learned residual scalars learn faster: lr 1.0": a quantity no knob took, beside a technique
    train.py already has, is the knob of that technique's own parameters (its scalars' learning rate)."""
    for m in [m for m in mentions if m.kind == "switch" and m.name in vocab.present]:
        for part in sorted(INTRINSIC_PARTS.get(m.name, set()) & PART_CONCEPTS):
            found = [(k, a) for k, a in _match_knobs({**{c: pool[c] for c in leftover}, part: m.start}, vocab, False)
                     if part in a and a & leftover]
            if len(found) == 1:
                knob, alias = found[0]
                mentions.remove(m)
                mentions.append(Mention("knob", knob.name, min(m.start, *(pool[c] for c in alias & leftover)),
                                        knob=knob))
                for concept in alias:
                    pool.pop(concept, None)
                break


def _add_member(mentions: list[Mention], concept: str, off: bool, at: int) -> None:
    family, member = concept.split(":", 1)
    mention = next((m for m in mentions if m.kind == "family" and m.name == family), None)
    if mention is None:
        mention = Mention("family", family, at)
        mentions.append(mention)
    mention.members.append((member, off, at))


def _paren_depth(tokens: tuple[Token, ...], start: int, end: int) -> dict[int, int]:
    depth, out = 0, {}
    for i in range(start, end):
        if tokens[i].text == "(":
            depth += 1
        elif tokens[i].text == ")":
            depth = max(0, depth - 1)
        out[i] = depth
    return out


def _compounds(local: list, concepts: set[str]) -> list:
    """Concepts that together name a technique become that technique (queries + keys + norm = QK-norm)."""
    for name, alternatives in COMPOUNDS.items():
        for needed in alternatives:
            present = {c for c in concepts if c in needed or c.split(":")[0] == "norm_type" and "norm" in needed}
            if needed <= {("norm" if c.startswith("norm_type:") else c) for c in present}:
                # on the word that names what is done ("without normalising q and k"), where its verb is
                norms = [s for s, _, cs in local if cs & present and not cs & {"query", "key", "value"}]
                first = min(norms or [s for s, _, cs in local if cs & present])
                kept = [(s, e, cs - present) for s, e, cs in local if cs - present or not cs & present]
                return sorted(kept + [(first, first + 1, frozenset({name}))], key=lambda x: x[0])
    return local


def masked(tokens: tuple[Token, ...], spans, start: int, end: int) -> list[Token]:
    """Tokens of a range with those inside a recognised phrase blanked (the 2 of "relu^2" is no value), and
    formulas in parentheses too ("(v = lambda*v + (1-lambda)*v_first)" states no setting)."""
    hidden = {i for s, e, cs in spans for i in range(s, e) if e - s > 1 or tokens[s].kind != "number"}
    hidden |= _formula_asides(tokens) | _variable_arithmetic(tokens)
    return [Token("_", "word") if i in hidden and tokens[i].kind != "word" else tokens[i] for i in range(start, end)]


def _variable_arithmetic(tokens: tuple[Token, ...]) -> set[int]:
    """Numbers in arithmetic with a one-letter variable ("x[t-1]", "block depth-1-i", "token t+2") are indices,
    not settings."""
    def variable(i: int) -> bool:
        return 0 <= i < len(tokens) and tokens[i].kind == "word" and len(tokens[i].raw) == 1
    return {i for i, t in enumerate(tokens) if t.kind == "number" and (
        word_at(tokens, i - 1) in _OPERATORS and variable(i - 2) or word_at(tokens, i + 1) in _OPERATORS
        and variable(i + 2))}


def _formula_asides(tokens: tuple[Token, ...]) -> set[int]:
    out, stack = set(), []
    for i, t in enumerate(tokens):
        if t.text == "(":
            stack.append(i)
        elif t.text == ")" and stack:
            opened = stack.pop()
            inner = tokens[opened + 1 : i]
            texts = [x.text for x in inner]
            formula = "=" in texts and any(op in texts for op in ("*", "+", "-", "/")) or any(
                x.text == "*" and k and inner[k - 1].kind == "word" for k, x in enumerate(inner))
            if not stack and formula and any(x.kind == "word" for x in inner):
                out.update(range(opened, i + 1))  # ("(v = lambda*v + ...)"; not "(..., label_smoothing=0.1)")
    return out


def nearest_verb(tokens: tuple[Token, ...], at: int, reach: int = 8) -> str:
    """The verb that governs a mention: the nearest "add"/"remove"-like word before it in its clause, so that in
    "drop the per-block blend of the initial embedding" the blend is removed."""
    for i in range(at - 1, max(-1, at - 1 - reach), -1):
        t = tokens[i]
        if t.text in SEPARATORS or t.text in (";", ":", "."):
            return ""
        if t.kind == "word" and t.text in OFF and (t.text not in ("off", "out") or word_at(tokens, i - 1) in _TURN):
            return "off"  # ("Nesterov off in Muon": the "off" belongs to Nesterov)
        if t.text == "on" and word_at(tokens, i - 1) in _TURN:  # "turn on"
            return "on"
        if t.kind == "word" and t.text in ON | REPLACE:  # "stop applying", "do not use": negated
            return "off" if any(x.kind == "word" and x.text in OFF for x in tokens[max(0, i - 2) : i]) else "on"
    return ""


def switched_off_after(tokens: tuple[Token, ...], at: int) -> bool:
    """"Turn Nesterov off", "take the biases out"."""
    following = [t.text for t in tokens[at + 1 : at + 3]]
    return ("off" in following or "out" in following) and any(t.text in _TURN for t in tokens[max(0, at - 3) : at])


def _located(tokens: tuple[Token, ...], at: int) -> bool:
    """Is the word at `at` a place ("in the Muon optimizer", "for Muon")?"""
    i = at - 1
    while i >= 0 and tokens[i].text in ("the", "a", "an", "it", "each", "everi", "all"):
        i -= 1
    return word_at(tokens, i) in PREPOSITIONS


def word_at(tokens: tuple[Token, ...], i: int) -> str:
    return tokens[i].text if 0 <= i < len(tokens) else ""


def _home(knob: Knob) -> set[str]:
    """The parts a knob lives in, which may be named beside it without saying where it applies ("attention head
    dimension"); any other part is a place ("attention softcap")."""
    return set(knob.concepts) | set(knob.scope) | {p for c in knob.concepts for p in HOMES.get(c, ())}


def governed_by(tokens: tuple[Token, ...], at: int, words: frozenset[str], reach: int = 3) -> bool:
    return any(tokens[i].kind == "word" and tokens[i].text in words for i in range(max(0, at - reach), at))
