"""A structured reading of an idea: which knobs or parts it changes, to what, in which direction.

"Shrink the feed-forward expansion to three times the width" and "MLP_RATIO 4 -> 3" both read as
MLP_RATIO = 3; "start decaying at 40 % of training" reads as WARMDOWN_RATIO = 0.6; "Replace ReLU² with a
SiLU-gated linear unit" reads as activation@mlp = swiglu. Two ideas are the same experiment when their
readings name the same targets with the same values (`compare`). A value named on one side only, another
direction, another part or another member of a family makes them different; a reading that finds nothing
decides nothing.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from memory.amounts import Amount, direction_of, read_amount, resolve, values_match
from memory.comparison import Change, Reading, show_value
from memory.cues import apply_cues, compile_cues
from memory.lexicon import (
    FILLERS,
    GENERIC,
    HOMES,
    OFF_WORDS,
    ON_WORDS,
    PARTS,
    QUANTITIES,
    REPLACE_WORDS,
    SAME_PLACE,
    WEAK_WORDS,
)
from memory.techniques import (
    COMPOUNDS,
    CUES,
    DEFAULT_SCOPES,
    FRACTION_SWITCHES,
    GATED,
    INTRINSIC_PARTS,
    NONE_MEMBERS,
    SWITCH_SETTINGS,
)
from memory.vocabulary import PART_CONCEPTS, Knob, Vocabulary
from memory.wording import Token, normalise, stem, tokenize

_OFF = frozenset(stem(w) for w in OFF_WORDS if " " not in w) | {"rid"}
_ON = frozenset(stem(w) for w in ON_WORDS if " " not in w) | {stem("use"), stem("try"), stem("switch")}
_REPLACE = frozenset(stem(w) for w in REPLACE_WORDS if " " not in w) | {"instead", "rather"}
_SEPARATORS = frozenset({",", ";", "and", "plus", "also", "+", "while", "together", "along", "then", "but", "with"})
_NEW_MARKERS = frozenset({"with", "by", "for", "to", "->", "into"})
_BEFORE_OLD = frozenset({"instead", "rather", "over"})
_QUANTITY = frozenset(QUANTITIES)
_WEAK = frozenset(stem(w) for w in WEAK_WORDS)
_PREPOSITIONS = frozenset({"on", "to", "for", "in", "of", "at", "into", "onto", "across", "insid"})
_TURN = frozenset(stem(w) for w in ("turn", "switch", "take", "leave", "cut", "shut", "kill"))
_WITHIN_ATTENTION = {"query": "attention", "key": "attention", "value": "attention"}


# ------------------------------------------------------------------------------------------------ mentions


@dataclass
class _Mention:
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


_CUES = compile_cues(CUES)


class _Spans(list):
    """Recognised phrases (start, end, concepts), and the positions inside descriptions of a technique."""

    def __init__(self, items: Iterable[tuple[int, int, frozenset[str]]], joined: frozenset[int] = frozenset()):
        super().__init__(items)
        self.joined = joined


def _spans(tokens: tuple[Token, ...], vocab: Vocabulary) -> _Spans:
    return _Spans(*apply_cues(tokens, vocab.matcher.match(tokens), _CUES))


def _clauses(tokens: tuple[Token, ...], spans: _Spans) -> list[tuple[int, int]]:
    inside = {i for s, e, _ in spans for i in range(s, e) if e - s > 1} | spans.joined
    bounds, depth, start = [], 0, 0
    for i, t in enumerate(tokens):
        if t.text == "(":
            depth += 1
        elif t.text == ")":
            depth = max(0, depth - 1)
        elif depth == 0 and i not in inside and t.text in _SEPARATORS:
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


def _mentions(tokens: tuple[Token, ...], spans, start: int, end: int, vocab: Vocabulary) -> list[_Mention]:
    local = [(s, e, c) for s, e, c in spans if start <= s < end]
    has_number = any(t.kind == "number" for t in _masked(tokens, spans, start, end))
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
    mentions: list[_Mention] = []
    pool: dict[str, int] = {}
    parts_at: dict[str, int] = {}
    dual: dict[str, tuple[str, bool, int]] = {}  # quantity concept -> the family member the same words name
    weak: set[str] = set()
    part_switch: dict[str, tuple[int, frozenset[str]]] = {}  # "x0 lambdas": a technique, or the scalars of a knob
    technique = switches > 0
    for s, e, concepts in local:
        off = _nearest_verb(tokens, s, reach=3) == "off" or _switched_off_after(tokens, e - 1)
        fam = [c for c in concepts if ":" in c and not c.startswith("switch:")]
        quantity = {c for c in concepts if c in _QUANTITY or c in PARTS}
        if fam and (not quantity or len(members[fam[0].split(":")[0]]) > 1
                    or ((off or _governed_by(tokens, s, _REPLACE | _ON)) and not has_number)):
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
            mentions.append(_Mention("switch", concept, s))
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
            if where < at and at - where <= 2 and part not in alias and part in _home(knob) \
                    and not any(tokens[i].text in _PREPOSITIONS for i in range(where, at)):
                parts_at.pop(part)
        element = next((i for i, el in enumerate(knob.elements) if el in pool), None)
        mentions.append(_Mention("knob", knob.name, at, element=element, knob=knob, weak=alias <= weak))
        for concept in alias | (knob.concepts & set(pool) & (GENERIC | set(knob.elements))):
            pool.pop(concept, None)
            parts_at.pop(concept, None)
    for concept, (at, parts) in part_switch.items():
        if parts <= set(pool):  # no knob took its words: the technique itself
            mentions.append(_Mention("switch", concept, at))
    knobs = [m for m in mentions if m.kind == "knob"]
    phases = [m for m in knobs if "warmup" in m.knob.concepts]
    others = [m for m in knobs if m not in phases and "lr" not in m.knob.concepts]
    if len(knobs) == 2 and len(phases) == 1 and others:  # "warm up the Muon momentum": a schedule of another knob
        other = others[0]
        phases[0].parts.add(other.name.lower())
        mentions.remove(other)
    for formula in vocab.derived:
        if formula.concepts <= set(pool) and not any(m.name == formula.solve_for for m in mentions):
            mentions.append(_Mention("derived", formula.solve_for, min(pool[c] for c in formula.concepts),
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
    leftover = {c for c in pool if c in _QUANTITY and c not in GENERIC and c not in PARTS}
    if leftover and not mentions:
        mentions.append(_Mention("words", "q:" + "+".join(sorted(leftover)), min(pool[c] for c in leftover)))
    mentions.sort(key=lambda m: m.start)
    for part, at in parts_at.items():
        if part not in pool or depth.get(at) and any(m.kind in ("family", "switch") for m in mentions):
            continue  # a part named in an aside ("(v = lambda*v ...)") is not where a technique goes
        owner = max((m for m in mentions if m.start <= at), key=lambda m: m.start, default=None) or \
            (mentions[0] if mentions else None)
        if owner is not None:
            owner.parts.add(part)
    return mentions


def _add_member(mentions: list[_Mention], concept: str, off: bool, at: int) -> None:
    family, member = concept.split(":", 1)
    mention = next((m for m in mentions if m.kind == "family" and m.name == family), None)
    if mention is None:
        mention = _Mention("family", family, at)
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
                first = min(s for s, _, cs in local if cs & present)
                kept = [(s, e, cs - present) for s, e, cs in local if cs - present or not cs & present]
                return sorted(kept + [(first, first + 1, frozenset({name}))], key=lambda x: x[0])
    return local


def _masked(tokens: tuple[Token, ...], spans, start: int, end: int) -> list[Token]:
    """Tokens of a range with those inside a recognised phrase blanked (the 2 of "relu^2" is no value), and
    formulas in parentheses too ("(v = lambda*v + (1-lambda)*v_first)" states no setting)."""
    hidden = {i for s, e, cs in spans for i in range(s, e) if e - s > 1 or tokens[s].kind != "number"}
    hidden |= _formula_asides(tokens)
    return [Token("_", "word") if i in hidden and tokens[i].kind != "word" else tokens[i] for i in range(start, end)]


def _formula_asides(tokens: tuple[Token, ...]) -> set[int]:
    out, stack = set(), []
    for i, t in enumerate(tokens):
        if t.text == "(":
            stack.append(i)
        elif t.text == ")" and stack:
            opened = stack.pop()
            inner = tokens[opened + 1 : i]
            if not stack and any(x.text in ("=", "*") for x in inner) and any(x.kind == "word" for x in inner):
                out.update(range(opened, i + 1))
    return out


def _nearest_verb(tokens: tuple[Token, ...], at: int, reach: int = 8) -> str:
    """The verb that governs a mention: the nearest "add"/"remove"-like word before it in its clause, so that in
    "drop the per-block blend of the initial embedding" the blend is removed."""
    for i in range(at - 1, max(-1, at - 1 - reach), -1):
        t = tokens[i]
        if t.text in _SEPARATORS or t.text in (";", ":", "."):
            return ""
        if t.kind == "word" and t.text in _OFF and (t.text not in ("off", "out") or _word_at(tokens, i - 1) in _TURN):
            return "off"  # ("Nesterov off in Muon": the "off" belongs to Nesterov)
        if t.kind == "word" and t.text in _ON | _REPLACE:  # "stop applying", "do not use": negated
            return "off" if any(x.kind == "word" and x.text in _OFF for x in tokens[max(0, i - 2) : i]) else "on"
    return ""


def _switched_off_after(tokens: tuple[Token, ...], at: int) -> bool:
    """"Turn Nesterov off", "take the biases out"."""
    following = [t.text for t in tokens[at + 1 : at + 3]]
    return ("off" in following or "out" in following) and any(t.text in _TURN for t in tokens[max(0, at - 3) : at])


def _located(tokens: tuple[Token, ...], at: int) -> bool:
    """Is the word at `at` a place ("in the Muon optimizer", "for Muon")?"""
    i = at - 1
    while i >= 0 and tokens[i].text in ("the", "a", "an", "it", "each", "everi", "all"):
        i -= 1
    return _word_at(tokens, i) in _PREPOSITIONS


def _word_at(tokens: tuple[Token, ...], i: int) -> str:
    return tokens[i].text if 0 <= i < len(tokens) else ""


def _home(knob: Knob) -> set[str]:
    """The parts a knob lives in, which may be named beside it without saying where it applies ("attention head
    dimension"); any other part is a place ("attention softcap")."""
    return set(knob.concepts) | set(knob.scope) | {p for c in knob.concepts for p in HOMES.get(c, ())}


def _governed_by(tokens: tuple[Token, ...], at: int, words: frozenset[str], reach: int = 3) -> bool:
    return any(tokens[i].kind == "word" and tokens[i].text in words for i in range(max(0, at - reach), at))


# ------------------------------------------------------------------------------------------------- reading


def read_idea(title: str, rationale: str, vocab: Vocabulary) -> Reading:
    """The reading of an idea: its title decides; the rationale only fills in values the title leaves out
    (or stands in for a title in which nothing is recognised)."""
    changes = _read(title, vocab)
    if rationale:
        extra = _read(rationale, vocab)
        named = {c for _, _, cs in _spans(tokenize(normalise(title)), vocab) for c in cs}
        if not any(c.target.split("@")[0][:2] != "q:" for c in changes):
            # a title naming nothing known ("second attempt"): the rationale says what changes; a title that names
            # things but no change takes only what the rationale says of those things (its "sharing" must not
            # decide "tie the ...")
            related = [c for c in extra if (c.values or c.direction) and (not named or _related(c, named, vocab))]
            changes = related or changes
        else:
            by_target = {c.target: c for c in extra if _numeric(c)}
            changes = [by_target.get(c.target, c) if not _numeric(c) else c for c in changes]
    changes = _merge(changes)
    return Reading(tuple(changes), _topic(title), _extras(title, changes, vocab))


def _numeric(change: Change) -> bool:
    return bool(change.values) and isinstance(change.values[0], float | tuple)


def _related(change: Change, named: set[str], vocab: Vocabulary) -> bool:
    """Does a change concern what a title names? A knob by a word of its name, a technique by itself or the part
    it works in (a title on "the sub-layer outputs" and a rationale adding dropout there)."""
    base = change.target.split("@")[0]
    knob = vocab.knobs.get(base)
    if knob is not None:
        return bool(named & (knob.concepts - GENERIC - {"optimizer", "parameters"}))
    family = base.split(":")[0] if not base.startswith("switch:") else base
    own = {c for c in named if c == family or c.startswith(family + ":")}
    return bool(own or named & INTRINSIC_PARTS.get(family, set()) & PART_CONCEPTS)


def _extras(title: str, changes: list[Change], vocab: Vocabulary) -> frozenset[float]:
    tokens = tokenize(normalise(title))
    masked = _masked(tokens, _spans(tokens, vocab), 0, len(tokens))
    explained: set[float] = set()
    for change in changes:
        for value in change.values:
            explained.update(value if isinstance(value, tuple) else (value,) if isinstance(value, float) else ())
        knob = vocab.knobs.get(change.target.split("@")[0])
        if knob is not None:
            for current in knob.values.values():
                explained.update(current if isinstance(current, tuple) else (current,))
    out = set()
    for k, t in enumerate(masked):
        if t.kind != "number" or t.value < 2 or t.value != int(t.value) or "/" in t.text:
            continue
        near = {masked[j].text for j in (k - 1, k + 1) if 0 <= j < len(masked)}
        if near & {"x", "time", "%", "percent", "fold"} or any(values_match(t.value, e) for e in explained):
            continue
        out.add(float(t.value))
    return frozenset(out)


_FILLER_STEMS = frozenset(stem(w) for w in FILLERS)


def _topic(text: str) -> frozenset[str]:
    """The title's content words and their order (pairs of neighbours): "local in even layers, full in odd" and
    "full in even layers, local in odd" use the same words for different experiments."""
    words = [t.text for t in tokenize(normalise(text))
             if t.kind == "word" and t.text not in _FILLER_STEMS and len(t.text) > 1]
    return frozenset(words) | frozenset(f"{a}>{b}" for a, b in zip(words, words[1:], strict=False))


def _merge(changes: Iterable[Change]) -> list[Change]:
    """One change per target: a value beats a bare direction, a number beats "on"."""
    out: dict[str, Change] = {}
    for change in changes:
        known = out.get(change.target)
        if known is not None and (not change.values or known.values and not isinstance(change.values[0], float | tuple)):
            continue
        out[change.target] = change
    return list(out.values())


def _substantive(mentions: list[_Mention], tokens: tuple[Token, ...], start: int, end: int) -> bool:
    """Does a clause say something of its own? One naming only a part or a bare word ("MLP", "init") is a
    continuation of its neighbour ("attention and MLP", "c_q, c_k and c_v")."""
    numbers = any(t.kind == "number" for t in tokens[start:end])
    said = direction_of(list(tokens[start:end]))
    for m in mentions:
        if m.kind in ("family", "switch", "derived"):
            return True
        if m.kind == "knob" and not m.weak and (numbers or said or not set(m.knob.aliases[0]) <= PART_CONCEPTS):
            return True
        if m.kind == "words" and said:
            return True
    return False


_REASONS = frozenset({"because", "sinc", "given", "hope", "hopefulli"})  # stems: what follows is why, not what


def _read(text: str, vocab: Vocabulary) -> list[Change]:
    tokens = tokenize(normalise(text))
    cut = next((i for i, t in enumerate(tokens) if i > 2 and t.kind == "word" and t.text in _REASONS), len(tokens))
    tokens = tokens[:cut]
    spans = _spans(tokens, vocab)
    ranges = _clauses(tokens, spans)
    merged: list[tuple[int, int]] = []
    pending_start: int | None = None
    for start, end in ranges:
        s = start if pending_start is None else pending_start
        if _substantive(_mentions(tokens, spans, s, end, vocab), tokens, s, end):
            merged.append((s, end))
            pending_start = None
        else:
            pending_start = s  # joins the next clause, or the last one at the end
    if pending_start is not None:
        if merged:
            merged[-1] = (merged[-1][0], len(tokens))
        else:
            merged.append((pending_start, len(tokens)))
    stated: dict[str, Any] = {}
    changes: list[Change] = []
    families: dict[str, _Mention] = {}
    later: list[tuple[_Mention, list[Token]]] = []
    verbs = _OFF | _ON | _REPLACE
    inherited_off = False
    for start, end in merged:
        mentions = _mentions(tokens, spans, start, end, vocab)
        own_verbs = {t.text for t in tokens[start:end] if t.kind == "word"} & verbs
        if own_verbs:  # "remove A and B": the verb of a list goes on to the items that have none
            inherited_off = bool(own_verbs & _OFF)
        for k, mention in enumerate(mentions):
            own_start = start if k == 0 else mention.start
            own_end = mentions[k + 1].start if k + 1 < len(mentions) else end
            owned = _masked(tokens, spans, own_start, own_end)
            mention.before = tuple(t.text for t in tokens[max(start, own_start - 2):own_start])
            mention.explicit = len(mentions) == 1
            if mention.kind == "family":
                if mention.name in families:
                    families[mention.name].members += mention.members
                    families[mention.name].parts |= mention.parts
                else:
                    families[mention.name] = mention
            elif mention.kind == "derived":
                later.append((mention, owned))
            elif mention.kind == "knob":
                changes.append(_knob_change(mention, owned, vocab, stated))
            elif mention.kind == "switch":
                changes.append(_switch_change(mention, owned, tokens, inherited_off and not own_verbs,
                                              others=any(m.kind == "knob" for m in mentions)
                                              and any(t.kind == "number" for t in tokens[start:end]),
                                              vocab_present=vocab.present))
            else:
                changes.append(_words_change(mention, owned))
    for mention, owned in later:  # solved after the knobs they depend on ("width 1024 at depth 8")
        changes.append(_knob_change(mention, owned, vocab, stated))
    for mention in families.values():
        changes.append(_family_change(mention, (tokens, 0, len(tokens)), vocab))
    changes = [c for c in changes if c is not None]
    if any(c.target.startswith("switch:qknorm") for c in changes):  # "QK-norm with LayerNorm": its own detail
        changes = [c for c in changes if not c.target.startswith("norm_type@")]
    if any(c.target.startswith("attention_kind@") for c in changes):  # "share one KV head": MQA, not tying
        changes = [c for c in changes if not c.target.startswith("switch:tying@")]
    return changes


def _scope(parts: set[str], default: str = "*", owner: str = "") -> str:
    """Canonical place of a change: queries/keys/values are attention; an optimizer named beside a part only
    says which group the part is in; parts intrinsic to the technique say nothing."""
    parts = {_WITHIN_ATTENTION.get(p, p) for p in parts} - INTRINSIC_PARTS.get(owner, set())
    if parts - {"adamw", "muon"}:
        parts -= {"adamw", "muon"}
    if "everything" in parts:
        return "*"
    if not parts or parts <= set(default.split("+")):
        return default
    return "+".join(sorted(parts))


def _knob_change(mention: _Mention, owned: list[Token], vocab: Vocabulary, stated: dict[str, Any]) -> Change | None:
    knob = mention.knob
    if knob is None:
        return None
    is_tuple = isinstance(next(iter(knob.values.values())), tuple)
    fraction_like = bool(knob.concepts & {"ratio", "frac"}) and all(
        not isinstance(v, tuple) and 0 <= v <= 1 for v in knob.values.values())
    amount = read_amount(owned, fraction_like=fraction_like, terminal_phase="warmdown" in knob.concepts,
                         is_tuple=is_tuple and mention.element is None)
    direction = direction_of(owned)
    off = any(t.kind == "word" and t.text in _OFF for t in owned)
    on = any(t.kind == "word" and t.text in _ON for t in owned)
    extra = {_WITHIN_ATTENTION.get(p, p) for p in mention.parts} - knob.concepts - knob.scope
    extra -= {p for c in knob.concepts for p in SAME_PLACE.get(c, ())} | {"loss"}
    target = knob.name + (f"@{_scope(extra)}" if extra - {"everything"} else "")
    if amount is None and off and not direction:
        return Change(target, (knob.off_value,), -1)
    if amount is None:
        if on and all(v == 0 for v in knob.values.values() if not isinstance(v, tuple)):
            direction = direction or 1
        return Change(target, (), direction) if direction else None
    if mention.kind == "derived":
        values = _solve_derived(mention.name, amount, vocab, stated)
    else:
        values = tuple(dict.fromkeys(v for p in vocab.profiles
                                     if (v := resolve(amount, knob.current(p), mention.element)) is not None))
        if amount.kind == "absolute":
            stated[knob.name] = amount.value
    if not values:
        return Change(target, (), direction) if direction else None
    context = {stem(w) for w in ("at", "same", "keep", "current", "fixed", "constant", "unchanged", "still")}
    if amount.kind == "absolute" and not direction and amount.old is None and not on and not off \
            and (any(t.text in context for t in owned) or set(mention.before) & context) \
            and any(values_match(v, c) for v in values for c in knob.values.values()):
        return None  # "at depth 8": the current value, stated as context
    if not direction:
        current = [c for c in knob.values.values() if not isinstance(c, tuple)]
        if current and not isinstance(values[0], tuple):
            direction = 1 if all(v > c for v in values for c in current) else \
                -1 if all(v < c for v in values for c in current) else 0
    return Change(target, tuple(_rounded(v) for v in values), direction)


def _rounded(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(_rounded(v) for v in value)
    return float(format(float(value), ".12g"))


def _solve_derived(name: str, amount: Amount, vocab: Vocabulary, stated: dict[str, Any]) -> tuple[Any, ...]:
    formula = next(f for f in vocab.derived if f.solve_for == name)
    out = []
    for profile in vocab.profiles:
        env = vocab.value_env(profile, {k: v for k, v in stated.items() if k != name})
        try:
            f0 = _eval(formula.expression, {**env, name: 0.0})
            f1 = _eval(formula.expression, {**env, name: 1.0})
            current = _eval(formula.expression, env)
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        if f1 == f0:
            continue
        target = resolve(amount, current)
        if target is not None:
            out.append((target - f0) / (f1 - f0))
    return tuple(dict.fromkeys(out))


def _eval(node: ast.expr, env: dict[str, Any]) -> float:
    return float(eval(compile(ast.Expression(node), "<formula>", "eval"), {"__builtins__": {}}, dict(env)))  # noqa: S307


def _family_change(mention: _Mention, where: tuple[tuple[Token, ...], int, int], vocab: Vocabulary) -> Change | None:
    tokens, start, end = where
    family = mention.name
    if family == "init" and not any(t.text.startswith("init") for t in tokens[start:end]) \
            and all(m in ("zero", "normal", "uniform") for m, _, _ in mention.members):
        return None  # "decay to zero", "a uniform batch": not an initialisation
    on = [(m, at) for m, off, at in mention.members if not off]
    gated = {GATED[m] for m, _ in on if m in GATED}
    if family == "activation" and len(gated) == 1 and any(m == "glu" for m, _ in on):
        on = [(next(iter(gated)), at) if m == "glu" or m in GATED else (m, at) for m, at in on]  # gated SiLU: SwiGLU
    off = [m for m, was_off, _ in mention.members if was_off]
    present = {c.split(":", 1)[1] for c in vocab.present if c.startswith(family + ":")}
    distinct = list(dict.fromkeys(m for m, _ in on))
    if not distinct:
        new = NONE_MEMBERS.get(family, "none") if off else None
    elif len(distinct) == 1:
        new = distinct[0]
        verb = any(tokens[i].text in _ON | _REPLACE for i in range(start, end) if tokens[i].kind == "word")
        if new in present and not off and not verb and len(mention.members) == 1 and not mention.parts:
            return None  # "then decay linearly": the schedule train.py already has, named in passing
    else:
        new = _new_member(on, tokens, start, end, present)
    if new is None:
        return None
    value: Any = new
    numbers = [t.value for t in _masked(tokens, _spans(tokens, vocab), start, end)
               if t.kind == "number" and t.value > 1]
    if numbers and family in ("attention_kind", "init"):
        value = f"{new}:{show_value(float(numbers[-1]))}"
    named = _arrow_word(tokens, start, end, vocab)
    if named:
        value = f"{value}:{named}"
    parts = set(mention.parts)
    if family == "optimizer":  # "replace AdamW with Lion": where AdamW acts (learned from train.py's knobs)
        replaced = [m for m, _, _ in mention.members if m != new and m in vocab.optimizer_parts]
        if not parts - {"everything"} and replaced:
            parts = set(vocab.optimizer_parts[replaced[0]])
        parts = {_WITHIN_ATTENTION.get(p, p) for p in parts} - {"adamw", "muon"}
    scope = _scope(parts, DEFAULT_SCOPES.get(family, "*"), family)
    return Change(f"{family}@{scope}", (value,), 0)


def _new_member(on: list[tuple[str, int]], tokens: tuple[Token, ...], start: int, end: int,
                present: set[str]) -> str | None:
    """Of several members named, the one the idea moves to: the one train.py does not have yet, else the one
    after "with / to / ->" or before "instead of"."""
    absent = [m for m, _ in on if m not in present]
    if len(set(absent)) == 1 and len({m for m, _ in on}) > 1:
        return absent[0]
    for member, at in on:
        before = {tokens[i].text for i in range(max(start, at - 2), at)}
        if before & _NEW_MARKERS:
            others_after = [m for m, a in on if a > at]
            if not others_after or not any(tokens[i].text in _BEFORE_OLD for i in range(at, end)):
                return member
    for member, at in on:
        if any(tokens[i].text in _BEFORE_OLD for i in range(at + 1, min(end, at + 8))):
            return member
    chosen = [m for m, at in on if m in absent and _governed_by(tokens, at, _ON)]
    if len(set(chosen)) == 1:  # "use a trapezoidal schedule: constant LR then linear decay"
        return chosen[0]
    return None


def _arrow_word(tokens: tuple[Token, ...], start: int, end: int, vocab: Vocabulary) -> str:
    """A setting named by an unknown word after an arrow ("window pattern SSSL -> SSLL"): kept as the value."""
    known = {i for s, e, _ in _spans(tokens, vocab) for i in range(s, e)}
    for i in range(end - 2, start - 1, -1):
        if tokens[i].text == "->" and tokens[i + 1].kind == "word" and i + 1 not in known:
            return tokens[i + 1].raw
    return ""


def _switch_change(mention: _Mention, owned: list[Token], tokens: tuple[Token, ...], inherited_off: bool,
                   others: bool = False, vocab_present: frozenset[str] = frozenset()) -> Change | None:
    name = mention.name
    verb = _nearest_verb(tokens, mention.start)
    off = inherited_off or verb == "off" or _switched_off_after(tokens, mention.start)
    on = verb == "on"
    numbers = [t for t in owned if t.kind == "number"]
    if name == "switch:tying" and (any(t.text in (stem("untie"), stem("untied"), "untying") for t in owned)):
        off = True
    scope = _scope(mention.parts, DEFAULT_SCOPES.get(name, "*"), name)
    target = f"{name}@{scope}"
    if others and name in vocab_present and not numbers and not off:
        return None  # "accumulate over more micro-steps: device batch 32": train.py's own technique, as context
    if numbers and not off and name in SWITCH_SETTINGS:
        amount = read_amount(owned, fraction_like=name in FRACTION_SWITCHES, terminal_phase=False, is_tuple=False)
        low, high = SWITCH_SETTINGS[name]
        if amount is not None and amount.kind == "absolute" and low <= amount.value <= high:
            return Change(target, (_rounded(amount.value),), 1)
    if off:
        return Change(target, ("off",), -1)
    clause_start = not owned or mention.start == 0 or tokens[mention.start - 1].text in _SEPARATORS
    if on or mention.explicit or clause_start:  # "Tie the value embeddings ...": the technique is the verb
        return Change(target, ("on",), 1)
    return None


def _words_change(mention: _Mention, owned: list[Token]) -> Change | None:
    amount = read_amount(owned, fraction_like=False, terminal_phase=False, is_tuple=False)
    direction = direction_of(owned)
    target = mention.name + (f"@{_scope(mention.parts)}" if mention.parts else "")
    if amount is not None and amount.kind == "absolute":
        return Change(target, (_rounded(amount.value),), direction)
    if amount is not None and amount.kind == "factor":
        return Change(target, (f"x{show_value(_rounded(amount.value))}",), direction)
    return Change(target, (), direction) if direction else None
