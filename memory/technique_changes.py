"""The change a named technique makes: a member of a family (`activation@mlp = swiglu`), a technique turned on,
off or set (`switch:dropout@attention+mlp = 0.1`), or words no knob took (`q:lr = x0.5`), and where it acts."""

from __future__ import annotations

from typing import Any

from memory.amounts import direction_of, read_amount
from memory.comparison import Change, show_value
from memory.mentions import (
    ON,
    REPLACE,
    SEPARATORS,
    WITHIN_ATTENTION,
    Mention,
    governed_by,
    masked,
    nearest_verb,
    spans_of,
    switched_off_after,
)
from memory.techniques import (
    DEFAULT_SCOPES,
    FRACTION_SWITCHES,
    GATED,
    INTRINSIC_PARTS,
    MEMBER_UNITS,
    NONE_MEMBERS,
    NUMBERED_MEMBERS,
    PART_ALIASES,
    SWITCH_SETTINGS,
    SWITCH_UNITS,
    UNIT_OFFSETS,
    USUAL_SETTINGS,
)
from memory.vocabulary import Vocabulary
from memory.wording import Token, stem

_NEW_MARKERS = frozenset({"with", "by", "for", "to", "->", "into"})


_BEFORE_OLD = frozenset({"instead", "rather", "over"})


def scope_of(parts: set[str], default: str = "*", owner: str = "") -> str:
    """Canonical place of a change: queries/keys/values are attention; an optimizer named beside a part only
    says which group the part is in; parts intrinsic to the technique say nothing."""
    parts = {PART_ALIASES.get(owner, {}).get(p, p) for p in parts}  # "tie wte to the output projection"
    if "mlp" in parts:  # the MLP's c_proj is part of the MLP
        parts.discard("out_proj")
    parts = {WITHIN_ATTENTION.get(p, p) for p in parts} - INTRINSIC_PARTS.get(owner, set())
    if parts - {"adamw", "muon"}:
        parts -= {"adamw", "muon"}
    if "everything" in parts:
        return "*"
    if not parts or parts <= set(default.split("+")):
        return default
    return "+".join(sorted(parts))


def rounded(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(rounded(v) for v in value)
    return float(format(float(value), ".12g"))


def family_change(mention: Mention, where: tuple[tuple[Token, ...], int, int], vocab: Vocabulary,
                   alone: bool = False) -> Change | None:
    tokens, start, end = where
    family = mention.name
    if family == "init" and not any(t.text.startswith("init") or t.text == "start" for t in tokens[start:end]) \
            and all(m in ("zero", "normal", "uniform") for m, _, _ in mention.members):
        return None  # "decay to zero", "a uniform batch": not an initialisation
    on = [(m, at) for m, off, at in mention.members if not off]
    gated = {GATED[m] for m, _ in on if m in GATED}
    if family == "activation" and len(gated) == 1 and any(m == "glu" for m, _ in on):
        on = [(next(iter(gated)), at) if m == "glu" or m in GATED else (m, at) for m, at in on]  # gated SiLU: SwiGLU
    off = [m for m, was_off, _ in mention.members if was_off]
    if family == "norm_position" and off and not on:  # "remove the pre-norm on the attention input": no norm there
        family, on, off = "norm_type", [], ["norm"]
    present = {c.split(":", 1)[1] for c in vocab.present if c.startswith(family + ":")}
    distinct = list(dict.fromkeys(m for m, _ in on))
    if not distinct:
        fallback = NONE_MEMBERS.get(f"{family}:{off[0]}", NONE_MEMBERS.get(family, "none")) if off else None
        new = fallback
    elif len(distinct) == 1:
        new = distinct[0]
        verb = any(tokens[i].text in ON | REPLACE for i in range(start, end) if tokens[i].kind == "word")
        if new in present and not off and not verb and len(mention.members) == 1 and not mention.parts and not alone:
            return None  # "then decay linearly": the schedule train.py already has, named in passing
    else:
        new = _new_member(on, tokens, start, end, present)
    if new is None and {"gqa", "mqa"} <= set(distinct):
        new = "gqa"  # (resolved below by the number of key/value heads)
    if new is None:
        return None
    value: Any = new
    shown = masked(tokens, spans_of(tokens, vocab), start, end)
    numbers = [t.value for k, t in enumerate(shown) if t.kind == "number"
               and (t.value > 1 or family == "init" and "std" in {x.text for x in shown[max(0, k - 3) : k]})
               and not {x.text for x in shown[max(0, k - 3) : k]} & {"instead", "rather", "from"}]
    if numbers and new in NUMBERED_MEMBERS.get(family, ()):
        units = {stem(u) for u in MEMBER_UNITS.get(new, ())}
        counted = [t.value for k, t in enumerate(shown) if t.kind == "number"
                   and units & {x.text for x in shown[k + 1 : k + 4]}]
        value = f"{new}:{show_value(float((counted or numbers)[-1 if not counted else 0]))}"
    if value == "gqa:1" or new is not None and new == "gqa" and "mqa" in distinct and any(
            t.kind == "number" and t.value == 1 for t in shown):
        value = "mqa"  # one key/value head for all queries
    named = _arrow_word(tokens, start, end, vocab)
    if named:
        value = f"{value}:{named}"
    parts = set(mention.parts)
    if family == "optimizer":  # "replace AdamW with Lion": where AdamW acts (learned from train.py's knobs)
        replaced = [m for m, _, _ in mention.members if m != new and m in vocab.optimizer_parts]
        if not parts and replaced:
            parts = set(vocab.optimizer_parts[replaced[0]])
        parts = {WITHIN_ATTENTION.get(p, p) for p in parts} - {"adamw", "muon"}
    scope = scope_of(parts, DEFAULT_SCOPES.get(family, "*"), family)
    return Change(f"{family}@{scope}", (value,), 0)


def _new_member(on: list[tuple[str, int]], tokens: tuple[Token, ...], start: int, end: int,
                present: set[str]) -> str | None:
    """Of several members named, the one the idea moves to: the one train.py does not have yet, else the one
    after "with / to / ->" or before "instead of"."""
    colon = next((i for i in range(start, end) if tokens[i].text == ":"), None)
    headline = {m for m, at in on if colon is not None and at < colon}
    if len(headline) == 1 and any(at > colon for _, at in on):  # "a trapezoidal schedule: constant, then linear"
        return headline.pop()  # (what follows the colon spells out the member named before it)
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
    chosen = [m for m, at in on if m in absent and governed_by(tokens, at, ON)]
    if len(set(chosen)) == 1:  # "use a trapezoidal schedule: constant LR then linear decay"
        return chosen[0]
    return None


def _arrow_word(tokens: tuple[Token, ...], start: int, end: int, vocab: Vocabulary) -> str:
    """A setting named by an unknown word after an arrow ("window pattern SSSL -> SSLL"): kept as the value."""
    known = {i for s, e, _ in spans_of(tokens, vocab) for i in range(s, e)}
    for i in range(end - 2, start - 1, -1):
        if tokens[i].text == "->" and tokens[i + 1].kind == "word" and i + 1 not in known:
            return tokens[i + 1].raw
    return ""


def switch_change(mention: Mention, owned: list[Token], tokens: tuple[Token, ...], inherited_off: bool,
                   others: bool = False, vocab_present: frozenset[str] = frozenset()) -> Change | None:
    name = mention.name
    verb = nearest_verb(tokens, mention.start)
    off = inherited_off or verb == "off" or switched_off_after(tokens, mention.start)
    on = verb == "on"
    numbers = [t for t in owned if t.kind == "number"]
    if name == "switch:tying" and (any(t.text in (stem("untie"), stem("untied"), "untying") for t in owned)):
        off = True
    scope = scope_of(mention.parts, DEFAULT_SCOPES.get(name, "*"), name)
    target = f"{name}@{scope}"
    if others and name in vocab_present and not numbers and not off:
        return None  # "accumulate over more micro-steps: device batch 32": train.py's own technique, as context
    if numbers and not off and name in SWITCH_UNITS:
        units = {stem(u) for u in SWITCH_UNITS[name]}
        near = range(max(0, mention.start - 6), min(len(tokens) - 1, mention.start + 8))
        counted = [k for k in near if tokens[k].kind == "number"
                   and units & {t.text for t in tokens[k + 1 : k + 4]}]  # "4 learned sink tokens"
        offsets = {stem(u): v for u, v in UNIT_OFFSETS.get(name, {}).items()}
        offset = next((offsets[t.text] for t in tokens[counted[0] + 1 : counted[0] + 4] if t.text in offsets), 0.0) \
            if counted else 0.0  # "predict the next 2 tokens": one head beyond the usual next-token one
        numbers = owned = [Token(tokens[k].text, "number", tokens[k].value + offset, tokens[k].raw) for k in counted]
    if numbers and not off and name in SWITCH_SETTINGS:
        amount = read_amount(owned, fraction_like=name in FRACTION_SWITCHES, terminal_phase=False, is_tuple=False)
        low, high = SWITCH_SETTINGS[name]
        if amount is not None and amount.kind == "absolute" and low <= amount.value <= high:
            if amount.value == USUAL_SETTINGS.get(name):
                return Change(target, ("on",), 1)  # "one extra prediction head": what the technique is anyway
            return Change(target, (rounded(amount.value),), 1)
    if off:
        return Change(target, ("off",), -1)
    clause_start = not owned or mention.start == 0 or tokens[mention.start - 1].text in SEPARATORS
    if on or mention.explicit or clause_start:  # "Tie the value embeddings ...": the technique is the verb
        return Change(target, ("on",), 1)
    return None


def words_change(mention: Mention, owned: list[Token]) -> Change | None:
    amount = read_amount(owned, fraction_like=False, terminal_phase=False, is_tuple=False)
    direction = direction_of(owned)
    target = mention.name + (f"@{scope_of(mention.parts)}" if mention.parts else "")
    if mention.name == "q:init" and amount is not None and amount.kind == "absolute":  # "init with std 0.02"
        return Change(f"init@{scope_of(mention.parts, owner='init')}", (f"normal:{show_value(rounded(amount.value))}",))
    if amount is not None and amount.kind == "absolute":
        return Change(target, (rounded(amount.value),), direction)
    if amount is not None and amount.kind == "factor":
        return Change(target, (f"x{show_value(rounded(amount.value))}",), direction)
    return Change(target, (), direction) if direction else None
