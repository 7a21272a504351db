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
import re
from collections.abc import Iterable
from typing import Any

from memory.amounts import Amount, direction_of, read_amount, resolve, values_match
from memory.comparison import Change, Reading
from memory.lexicon import FILLERS, GENERIC, SAME_PLACE
from memory.mentions import (
    OFF,
    ON,
    QUANTITY,
    REPLACE,
    WITHIN_ATTENTION,
    Mention,
    clauses,
    find_mentions,
    masked,
    spans_of,
)
from memory.technique_changes import family_change, rounded, scope_of, switch_change, words_change
from memory.techniques import (
    DETAIL_SWITCHES,
    INTRINSIC_PARTS,
    NUMBERED_MEMBERS,
    SWITCH_SETTINGS,
)
from memory.vocabulary import PART_CONCEPTS, Knob, Vocabulary
from memory.wording import Token, normalise, stem, tokenize

# ------------------------------------------------------------------------------------------------- reading


def read_idea(title: str, rationale: str, vocab: Vocabulary) -> Reading:
    """The reading of an idea: its title decides; the rationale only fills in values the title leaves out
    (or stands in for a title in which nothing is recognised)."""
    changes = _read(title, vocab)
    if rationale:
        extra = _read(rationale, vocab)
        named = {c for _, _, cs in spans_of(tokenize(normalise(title)), vocab) for c in cs}
        if not any(c.target.split("@")[0][:2] != "q:" for c in changes):
            # a title naming nothing known ("second attempt"): the rationale says what changes; a title that names
            # things but no change takes only what the rationale says of those things (its "sharing" must not
            # decide "tie the ...")
            related = [c for c in extra if (c.values or c.direction) and (not named or _related(c, named, vocab))]
            if not related and named and len(title.split()) <= 6 and _POSSESSIVE.search(rationale):
                # "Scalar parameters" + "... we propose halving their learning rate"
                said = [s for s in re.split(r"[.;!?]\s+", rationale) if _POSSESSIVE.search(s)]
                related = [c for s in said for c in _read(_POSSESSIVE.sub(title, s), vocab)
                           if (c.values or c.direction) and _related(c, named, vocab)]
            changes = related or changes
        else:
            by_target = {c.target: c for c in extra if _numeric(c)}
            if any(not _numeric(c) for c in changes):  # "EMA of the weights" + "decay 0.995": the EMA's decay
                stated = [t.value for t in tokenize(normalise(rationale)) if t.kind == "number"]
                own = {c.target: c for c in changes}
                by_target.update({c.target: c for c in _read(f"{title} where {rationale}", vocab)
                                  if _numeric(c) and c.target in own and c.target not in by_target
                                  and _fits(c, own[c.target], stated, vocab)})
            by_target.update(_pronoun_values(changes, rationale, by_target, vocab))
            by_target.update(_member_numbers(changes, title, rationale, vocab))
            changes = [by_target.get(c.target, c) if not _numeric(c) else c for c in changes]
    changes = _merge(changes)
    return Reading(tuple(changes), _topic(title), _extras(title, changes, vocab), _unread(title, vocab))


_PRONOUN = re.compile(r"\b(it|this|that|them|its value)\b(?=(?:\s+\w+){0,3}?\s+(?:to\s+|at\s+|=\s*)?[\d.]+)",
                      re.IGNORECASE)


_POSSESSIVE = re.compile(r"\b(?:their|its)\b", re.IGNORECASE)


def _pronoun_values(changes: list[Change], rationale: str, known: dict[str, Change],
                    vocab: Vocabulary) -> dict[str, Change]:
    """"The rotary base is too small ... we put it 50k": a number the rationale gives "it", when the title names
    one knob without a value and the rationale does not name the knob again."""
    open_knobs = [c for c in changes if not c.values and c.target in vocab.knobs and c.target not in known]
    if len(open_knobs) != 1 or len(changes) != 1 or not _PRONOUN.search(rationale):
        return {}
    target = open_knobs[0].target
    found = [c for c in _read(_PRONOUN.sub(target, rationale, count=1), vocab) if c.target == target and c.values]
    if not found or open_knobs[0].direction and found[0].direction and found[0].direction != open_knobs[0].direction:
        return {}
    return {target: found[0]}


def _member_numbers(changes: list[Change], title: str, rationale: str, vocab: Vocabulary) -> dict[str, Change]:
    """"Grouped-query attention" + "n_kv_head = 2": the number a rationale gives a member the title names without
    one (its KV heads, its window)."""
    bare = {c.target: c.values[0] for c in changes if len(c.values) == 1 and isinstance(c.values[0], str)
            and c.values[0] in NUMBERED_MEMBERS.get(c.target.split("@")[0], ())}
    if not bare:
        return {}
    return {c.target: c for c in _read(f"{title} where {rationale}", vocab) if c.target in bare and len(c.values) == 1
            and str(c.values[0]).startswith(bare[c.target] + ":")}


def _numbers_in(value: object) -> tuple[float, ...]:
    """The numbers inside a member's value ("gqa:2", "normal:0.02")."""
    out = []
    for part in str(value).split(":")[1:]:
        try:
            out.append(float(part))
        except ValueError:
            continue
    return tuple(out)


def _fits(found: Change, said: Change, stated: list[float], vocab: Vocabulary) -> bool:
    """May a value read from title and rationale together complete the title's change? Only a number the
    rationale states, not the knob's current value, and in the direction the title says."""
    value = found.values[0]
    if isinstance(value, tuple) or not any(values_match(value, s) for s in stated):
        return False
    knob = vocab.knobs.get(found.target.split("@")[0])
    if knob is None:
        return True
    current = [v for v in knob.values.values() if not isinstance(v, tuple)]
    if any(values_match(value, c) for c in current):
        return False
    return not said.direction or all((value > c) == (said.direction > 0) for c in current)


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
    placed = set(change.target.partition("@")[2].split("+")) & named & PART_CONCEPTS  # where it acts, named
    return bool(own or placed or named & INTRINSIC_PARTS.get(family, set()) & PART_CONCEPTS)


def _extras(title: str, changes: list[Change], vocab: Vocabulary) -> frozenset[float]:
    tokens = tokenize(normalise(title))
    hidden = masked(tokens, spans_of(tokens, vocab), 0, len(tokens))
    explained: set[float] = set()
    for change in changes:
        for value in change.values:
            explained.update(value if isinstance(value, tuple) else (value,) if isinstance(value, float) else
                             _numbers_in(value))
        knob = vocab.knobs.get(change.target.split("@")[0])
        if knob is not None:
            for current in knob.values.values():
                explained.update(current if isinstance(current, tuple) else (current,))
    out = set()
    for k, t in enumerate(hidden):
        aside = 0 < k < len(hidden) - 1 and hidden[k - 1].text == "(" and hidden[k + 1].text == ")"
        if t.kind != "number" or (t.value < 2 or t.value != int(t.value) or "/" in t.text) and not aside:
            continue  # (a value in parentheses is a setting: "the Muon learning rate (0.04) for the embeddings")
        near = {hidden[j].text for j in (k - 1, k + 1) if 0 <= j < len(hidden)}
        if near & {"x", "time", "%", "percent", "fold"} or any(values_match(t.value, e) for e in explained):
            continue
        out.add(float(t.value))
    return frozenset(out)


_FILLER_STEMS = frozenset(stem(w) for w in FILLERS)
_ACTIONS = frozenset(stem(w) for w in ("scale", "multiply", "divide", "set", "make", "raise", "lower", "increase",
                                       "decrease", "reduce", "double", "halve", "add", "remove", "use", "replace",
                                       "change", "tie", "share", "clip", "cap", "normalize", "init", "initialize"))


def _unread(title: str, vocab: Vocabulary) -> frozenset[str]:
    """Words of a later title clause that asks for something (a verb, and something the lexicon knows) but gave no
    change of its own: the idea does more than its reading says."""
    tokens = tokenize(normalise(title))
    spans = spans_of(tokens, vocab)
    out: set[str] = set()
    for k, (start, end) in enumerate(clauses(tokens, spans)):
        words = {t.text for t in tokens[start:end] if t.kind == "word"}
        known = any(cs & QUANTITY and start <= s < end for s, _, cs in spans)  # a quantity, not just a part
        if k == 0 or not words & _ACTIONS or not known:
            continue
        if not _substantive(find_mentions(tokens, spans, start, end, vocab), tokens, start, end, vocab.present):
            out |= words - _FILLER_STEMS
    return frozenset(out)


def _topic(text: str) -> frozenset[str]:
    """The title's content words and their order (pairs of neighbours): "local in even layers, full in odd" and
    "full in even layers, local in odd" use the same words for different experiments."""
    words = [t.text if t.kind == "word" else f"#{t.value:g}" for t in tokenize(normalise(text))
             if t.kind == "word" and t.text not in _FILLER_STEMS and len(t.text) > 1 or t.kind == "number"]
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


def _substantive(mentions: list[Mention], tokens: tuple[Token, ...], start: int, end: int,
                 vocab_present: frozenset[str] = frozenset()) -> bool:
    """Does a clause say something of its own? One naming only a part or a bare word ("MLP", "init") is a
    continuation of its neighbour ("attention and MLP", "c_q, c_k and c_v")."""
    numbers = any(t.kind == "number" for t in tokens[start:end])
    said = direction_of(list(tokens[start:end]))
    for m in mentions:
        if m.kind == "family" and m.name == "optimizer" and len(m.members) == 1 and len(mentions) == 1 \
                and start < m.start and tokens[start].text in ("in", "for", "insid", "within") \
                and f"optimizer:{m.members[0][0]}" in vocab_present:
            continue  # "..., in Muon": where the change before it acts
        if m.kind in ("family", "switch", "derived"):
            return True
        if m.kind == "knob" and not m.weak and (numbers or said or not set(m.knob.aliases[0]) <= PART_CONCEPTS):
            return True
        if m.kind == "words" and said:
            return True
    return False


# stems: what follows is why, or what follows from it, not what changes
_CONSEQUENCE = frozenset({"we", "that", "it", "the", "each", "there", "they"})  # "..., so we get twice the heads"
_REASONS = frozenset({"because", "sinc", "given", "hope", "hopefulli", "which", "yield", "thus", "henc", "therebi"})


def _read(text: str, vocab: Vocabulary) -> list[Change]:
    tokens = tokenize(normalise(text))
    cut = next((i for i, t in enumerate(tokens) if i > 2 and t.kind == "word" and (t.text in _REASONS or t.text == "so"
                and i + 1 < len(tokens) and tokens[i + 1].text in _CONSEQUENCE)), len(tokens))
    tokens = tokens[:cut]
    spans = spans_of(tokens, vocab)
    ranges = clauses(tokens, spans)
    merged: list[tuple[int, int]] = []
    pending_start: int | None = None
    for start, end in ranges:
        s = start if pending_start is None else pending_start
        found = find_mentions(tokens, spans, s, end, vocab)
        if merged and pending_start is None and any(t.kind == "number" for t in tokens[start:end]) and all(
                m.kind == "knob" and m.alias <= PART_CONCEPTS for m in found) and _awaits_setting(
                merged[-1], tokens, spans, vocab):
            merged[-1] = (merged[-1][0], end)  # "dropout, with probability 0.1 on the MLP": the setting it awaits
        elif merged and pending_start is None and found and all(m.kind == "switch" and m.parts for m in found) \
                and not {t.text for t in tokens[start:end]} & (OFF | ON | REPLACE) \
                and _lists_parts_of(merged[-1], found, tokens, spans, vocab):
            merged[-1] = (merged[-1][0], end)  # "the LR of the resid lambdas and the x0 lambdas: 0.3"
        elif _substantive(found, tokens, s, end, vocab.present):
            merged.append((s, end))
            pending_start = None
        elif merged and any(t.kind == "number" for t in tokens[start:end]) and any(
                cs & QUANTITY and start <= i < end for i, _, cs in spans) and any(
                t.text in _ACTIONS for t in tokens[start:end]):
            pending_start = None  # "and set the Adam epsilon to 1e-8": its number is no other knob's (unread)
        else:
            pending_start = s  # joins the next clause, or the last one at the end
    if pending_start is not None:
        if merged:
            merged[-1] = (merged[-1][0], len(tokens))
        else:
            merged.append((pending_start, len(tokens)))
    stated: dict[str, Any] = {}
    changes: list[Change] = []
    families: dict[str, Mention] = {}
    later: list[tuple[Mention, list[Token]]] = []
    verbs = OFF | ON | REPLACE
    inherited_off = False
    switched: set[str] = set()
    for start, end in merged:
        mentions = _mlp_width(find_mentions(tokens, spans, start, end, vocab), tokens, end)
        switched.update(m.name for m in mentions if m.kind == "switch")
        own_verbs = {t.text for t in tokens[start:end] if t.kind == "word"} & verbs
        if own_verbs:  # "remove A and B": the verb of a list goes on to the items that have none
            inherited_off = bool(own_verbs & OFF)
        for k, mention in enumerate(mentions):
            own_start = start if k == 0 else _postposed(tokens, mention.start, start)
            own_end = _postposed(tokens, mentions[k + 1].start, start) if k + 1 < len(mentions) else end
            owned = masked(tokens, spans, own_start, own_end)
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
                foreign = _foreign_asides(tokens, spans, mention, own_start, own_end)
                owned = [Token("_", "word") if own_start + i in foreign else t for i, t in enumerate(owned)]
                changes.append(_knob_change(mention, owned, vocab, stated))
            elif mention.kind == "switch":
                changes.append(switch_change(mention, owned, tokens, inherited_off and not own_verbs,
                                              others=any(m.kind == "knob" for m in mentions)
                                              and any(t.kind == "number" for t in tokens[start:end]),
                                              vocab_present=vocab.present))
            else:
                changes.append(words_change(mention, owned))
    for mention, owned in later:  # solved after the knobs they depend on ("width 1024 at depth 8")
        changes.append(_knob_change(mention, owned, vocab, stated))
    alone = len(families) == 1 and not any(c is not None for c in changes)
    for mention in families.values():
        changes.append(family_change(mention, (tokens, 0, len(tokens)), vocab, alone))
    changes = [c for c in changes if c is not None]
    if any(c.values and "final" in _concepts(c, vocab) for c in changes):  # "anneal down to 10 % of its peak":
        changes = [c for c in changes if c.values or "warmdown" not in _concepts(c, vocab)]  # the decay's floor
    if any(c.target.startswith("switch:norm_gains") for c in changes) and "switch:qknorm" in switched and not any(
            c.target.startswith("switch:qknorm") and c.values != ("on",) for c in changes):  # "QK-norm gains"
        changes = [Change("switch:norm_gains@query+key", c.values, c.direction) if c.target.startswith(
            "switch:norm_gains") else c for c in changes if not c.target.startswith("switch:qknorm")]
    if any(c.target.startswith("switch:qknorm") for c in changes):  # "QK-norm with LayerNorm": its own detail
        changes = [c for c in changes if not c.target.startswith("norm_type@")]
    if any(c.target.startswith(("switch:", "activation@", "attention_kind@")) and not c.target.startswith(
            DETAIL_SWITCHES) for c in changes):  # "smear ... with a learned gate": the gate is how, not what
        changes = [c for c in changes if not c.target.startswith(DETAIL_SWITCHES)] or changes
    if len(changes) > 1:  # "quarter the micro-batch and accumulate 4x as many": what train.py does anyway
        changes = [c for c in changes if not (c.values == ("on",) and c.target.split("@")[0] in vocab.present)]
    if any(c.target.startswith("attention_kind@") for c in changes):  # "share one KV head": MQA, not tying
        changes = [c for c in changes if not c.target.startswith("switch:tying@")]
    return changes


def _lists_parts_of(clause: tuple[int, int], found: list[Mention], tokens: tuple[Token, ...], spans,
                    vocab: Vocabulary) -> bool:
    """Does a clause only go on listing the parameters of the knob the clause before names without a value?"""
    start, end = clause
    knobs = [m for m in find_mentions(tokens, spans, start, end, vocab) if m.kind == "knob"]
    return len(knobs) == 1 and not any(t.kind == "number" for t in tokens[start:end]) and all(
        m.parts <= set(knobs[0].alias) for m in found)


def _awaits_setting(clause: tuple[int, int], tokens: tuple[Token, ...], spans, vocab: Vocabulary) -> bool:
    """Does a clause name a technique that takes a number ("applying dropout") and give it none?"""
    start, end = clause
    return not any(t.kind == "number" for t in tokens[start:end]) and any(
        m.kind == "switch" and m.name in SWITCH_SETTINGS for m in find_mentions(tokens, spans, start, end, vocab))


def _mlp_width(mentions: list[Mention], tokens: tuple[Token, ...], end: int) -> list[Mention]:
    """"Make the MLP hidden layer 50 % wider": a width said of the MLP is its expansion ratio, not the model's."""
    if not any(m.kind == "knob" and m.knob is not None and "mlp" in m.knob.concepts for m in mentions):
        return mentions
    out = []
    for k, m in enumerate(mentions):
        stop = mentions[k + 1].start if k + 1 < len(mentions) else end
        if m.kind == "derived" and not any(t.kind == "number" for t in tokens[m.start:stop]):
            continue
        out.append(m)
    return out


def _foreign_asides(tokens: tuple[Token, ...], spans, mention: Mention, start: int, end: int) -> set[int]:
    """Numbers in parentheses that count something else: "head_dim 64 (8 heads)" sets no head size to 8."""
    if mention.knob is None:
        return set()
    own = set(mention.knob.concepts)
    out: set[int] = set()
    opened = None
    for i in range(len(tokens)):
        if tokens[i].text == "(":
            opened = i
        elif tokens[i].text == ")" and opened is not None:
            named = {c for s, _, cs in spans if opened < s < i for c in cs if c in QUANTITY and c not in GENERIC}
            if named and not named & own:
                out.update(k for k in range(max(opened, start), min(i, end)) if tokens[k].kind == "number")
            opened = None
    return out


def _concepts(change: Change, vocab: Vocabulary) -> frozenset[str]:
    knob = vocab.knobs.get(change.target.split("@")[0])
    return frozenset(knob.concepts) if knob is not None else frozenset()


def _postposed(tokens: tuple[Token, ...], at: int, floor: int) -> int:
    """Where a mention's own words begin: a name after its number ("anneal to 10 % of its peak", "2 of the KV
    heads") owns the number before it, not the mention before."""
    if tokens[at].text != "of":
        return at
    i = at - 1
    while i > floor and tokens[i].text in ("%", "percent", "x", "time"):
        i -= 1
    return i if i >= floor and tokens[i].kind == "number" else at




def _knob_change(mention: Mention, owned: list[Token], vocab: Vocabulary, stated: dict[str, Any]) -> Change | None:
    knob = mention.knob
    if knob is None:
        return None
    is_tuple = isinstance(next(iter(knob.values.values())), tuple)
    fraction_like = bool(knob.concepts & {"ratio", "frac"}) and all(
        not isinstance(v, tuple) and 0 <= v <= 1 for v in knob.values.values())
    amount = read_amount(owned, fraction_like=fraction_like, terminal_phase="warmdown" in knob.concepts,
                         is_tuple=is_tuple and mention.element is None, multiple="ratio" in knob.concepts)
    direction = direction_of(owned)
    off = any(t.kind == "word" and t.text in OFF for t in owned)
    on = any(t.kind == "word" and t.text in ON for t in owned)
    extra = {WITHIN_ATTENTION.get(p, p) for p in mention.parts} - knob.concepts - knob.scope
    extra -= {p for c in knob.concepts for p in SAME_PLACE.get(c, ())} | {"loss"}
    target = knob.name + (f"@{scope_of(extra)}" if extra - {"everything"} else "")
    if amount is None and off and not direction:
        return Change(target, (knob.off_value,), -1)
    if "warmup" in knob.concepts and any(p.upper() in vocab.knobs for p in mention.parts):
        numbers = tuple(sorted(float(t.value) for t in owned if t.kind == "number"))  # warm Muon's momentum
        return Change(target, (numbers,) if numbers else (), 1)  # from 0.85 to 0.95 over 300 steps
    if amount is not None and amount.kind == "absolute" and amount.old is None and (on or off) and _counts(knob) \
            and _verb_before_number(owned):  # "remove one transformer block", "add two layers"
        amount = Amount("delta", (-1 if _verb_before_number(owned) in _REMOVES else 1) * amount.value)
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
    return Change(target, tuple(rounded(v) for v in values), direction)


def _counts(knob: Knob) -> bool:
    """A knob that counts things (layers, iterations, steps): whole numbers above one."""
    return all(isinstance(v, int) and v > 1 for v in knob.values.values())


_ADDS = frozenset(stem(w) for w in ("add", "adding", "insert", "append", "stack", "extra"))
_REMOVES = frozenset(stem(w) for w in ("remove", "removing", "drop", "dropping", "delete", "strip", "take"))


def _verb_before_number(owned: list[Token]) -> str:
    """"add" / "remove" just before the first number ("remove one block"), else ""."""
    first = next((k for k, t in enumerate(owned) if t.kind == "number"), None)
    found = [t.text for t in owned[max(0, first - 2) : first] if t.text in _ADDS | _REMOVES] if first else []
    return found[-1] if found else ""




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










