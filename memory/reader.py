"""The English reader: constants and values in an idea written in words, for ideas that came without `changes`.

It serves `autoresearch memory check "free text"` and any idea a model proposed without filling `changes`, and
reads what it can be sure of, saying when it is not (`Changes.complete`). A constant is named by its code name
(`MLP_RATIO`, `mlp ratio`), by the words of that name (`matrix learning rate`), or by a head word no other
constant has (`softcap`); its value follows (`4 -> 3`, `from 4 to 3`, `to 3`, `= 3`, `three`, `halve`, `70%` of a
fraction, `by 50%` or `by a factor of 2` in its verb's direction) and is resolved per device profile. Words it
cannot place, other than those train.py's own comment gives the constant, leave the reading unsure; without any
constant they are the idea's technique words (`turn QK-norm off`), compared with the techniques past experiments
named. Its vocabulary is general English and fixed: it does not grow phrase by phrase. A reading is stored with
`READER_VERSION`, and stored readings are redone when it changes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from agents import trainpy
from agents.trainpy import canonical_value
from memory.changes import Changes, content_words, stem, word_match

READER_VERSION = "2"
ABBREVIATIONS = {"lr": ("learning", "rate"), "dim": ("dimension",), "ns": ("newton", "schulz"),
                 "frac": ("fraction",), "softcap": ("soft", "cap"), "rope": ("rotary",), "adam": ("adamw",),
                 "mlp": ("feed", "forward"), "embedding": ("embed",)}
OPTIONAL_LAST = frozenset({"ratio", "frac", "size"})  # 'warmdown 0.6' names WARMDOWN_RATIO
FACTORS = {"halve": 0.5, "half": 0.5, "double": 2.0, "twice": 2.0, "triple": 3.0, "quadruple": 4.0}
UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                    "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
TENS = {w: 10 * (i + 2) for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())}
SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
FROM_MARKERS = (("from",), ("instead", "of"), ("rather", "than"), ("not",), ("was",))
AMOUNT_WORDS = frozenset(FACTORS) | {"by", "factor"}
UP = frozenset("raise increase grow widen bump up higher larger more boost extend lengthen deepen".split())
DOWN = frozenset("lower reduce decrease cut shrink narrow down less smaller shorten trim".split())
_TOKEN = re.compile(r"\((?:\s*[-+]?[\d.]+(?:e-?\d+)?\s*,)+\s*[-+]?[\d.]+(?:e-?\d+)?\s*\)"  # a tuple
                    r"|[a-z][a-z0-9_']*(?:\^|\*\*)\d+|[a-z]+[²³]"  # relu^2, relu²: a name, not a number
                    r"|[-+]?\d+(?:\.\d+)?\s*(?:\*\*|\^)\s*\d+"  # 2**18
                    r"|[-+]?\d*\.?\d+(?:e[-+]?\d+)?(?:k\b)?%?"  # numbers, 50k, 70%
                    r"|->|=>|=|:"
                    r"|[a-z][a-z0-9_']*", re.IGNORECASE)


@dataclass
class Token:
    text: str  # as written (case kept)
    kind: str  # "word" | "num" | "arrow" | "eq"
    value: Any = None  # a number or tuple of numbers
    percent: bool = False
    used: bool = False


def tokenize(text: str) -> list[Token]:
    text = text.replace("→", "->").replace("×", " x ").replace("−", "-")
    tokens: list[Token] = []
    for raw in _TOKEN.findall(text):
        lower = raw.lower()
        if raw in ("->", "=>"):
            tokens.append(Token(raw, "arrow"))
        elif raw in ("=", ":"):
            tokens.append(Token(raw, "eq"))
        elif raw[0] == "(":
            tokens.append(Token(raw, "num", tuple(float(x) for x in raw.strip("()").split(","))))
        elif raw[0].isdigit() or raw[0] in "+-.":
            tokens.append(_number(raw))
        elif lower in UNITS or lower in TENS or lower in SCALES:
            _spelled(tokens, lower)
        elif lower in ("percent", "pct") and tokens and tokens[-1].kind == "num":
            tokens[-1].percent = True
        else:
            tokens.append(Token(raw, "word", stem(lower.strip("'").removesuffix("'s"))))
    return tokens


def _number(raw: str) -> Token:
    text = raw.lower().replace(" ", "")
    percent = text.endswith("%")
    text = text.rstrip("%")
    if "**" in text or "^" in text:
        base, _, power = text.replace("^", "**").partition("**")
        value: float = float(base) ** min(float(power), 64)
    elif text.endswith("k"):
        value = float(text[:-1]) * 1000
    else:
        value = float(text)
    return Token(raw, "num", value, percent)


def _spelled(tokens: list[Token], word: str) -> None:
    """Numbers in words: 'twelve', 'five hundred thousand'."""
    prev = tokens[-1] if tokens and tokens[-1].kind == "num" and tokens[-1].text.isalpha() else None
    if word in SCALES:
        if prev is not None:
            prev.value, prev.text = prev.value * SCALES[word], word
            return
        tokens.append(Token(word, "num", float(SCALES[word])))
    elif prev is not None and word in UNITS and prev.value >= 20 and prev.value % 10 == 0:
        prev.value += UNITS[word]
    else:
        tokens.append(Token(word, "num", float(UNITS.get(word, TENS.get(word, 0)))))


# ---------------------------------------------------------------------------------------------- mentions


@dataclass
class Mention:
    name: str
    positions: list[int]  # the tokens that name it

    @property
    def start(self) -> int:
        return min(self.positions)

    @property
    def end(self) -> int:
        return max(self.positions)


def _name_words(name: str) -> list[tuple[tuple[str, ...], ...]]:
    """Per word of a constant's name, the ways a text may say it ('lr' or 'learning rate')."""
    out = []
    for word in name.lower().split("_"):
        forms = [(stem(word),)]
        if word in ABBREVIATIONS:
            forms.append(ABBREVIATIONS[word])
        out.append(tuple(forms))
    return out


def _find(tokens: list[Token], name: str, heads: dict[str, int]) -> Mention | None:
    """Where the text names constant `name`: its code name; every word of it close together (a last 'ratio',
    'size' or 'frac' may be left out); or its head noun alone where no other constant has that word."""
    for i, tok in enumerate(tokens):
        if tok.kind == "word" and tok.text.upper() == name:
            return Mention(name, [i])
    words = _name_words(name)
    optional = len(words) > 1 and words[-1][0][0] in OPTIONAL_LAST
    positions: list[int] = []
    for k, forms in enumerate(words):
        hit = _locate(tokens, forms)
        if hit is None and not (optional and k == len(words) - 1):
            head = words[-2 if optional else -1][0][0]
            alone = _locate(tokens, words[-2 if optional else -1]) if heads.get(head) == 1 else None
            return Mention(name, alone) if alone and len(words) > 1 else None
        positions.extend(hit or [])
    if max(positions) - min(positions) > len(positions) + 2:
        return None
    return Mention(name, positions)


def _locate(tokens: list[Token], forms: tuple[tuple[str, ...], ...]) -> list[int] | None:
    for form in forms:
        for i in range(len(tokens) - len(form) + 1):
            if all(tokens[i + k].kind == "word" and word_match(tokens[i + k].value, w) for k, w in enumerate(form)):
                return list(range(i, i + len(form)))
    return None


@dataclass(frozen=True)
class Knobs:
    """The numeric constants of one train.py (number or tuple of numbers), per profile."""

    numbers: dict[str, dict[str, Any]]
    profiles: tuple[str, ...]
    described: dict[str, frozenset[str]]  # name -> words of the comment train.py writes beside it


def knobs(train_py: str) -> Knobs:
    model = trainpy.read(train_py)
    numbers = {name: dict(c.values) for name, c in model.constants.items()
               if c.values and all(_numeric(v) for v in c.values.values())}
    described = {name: content_words(c.comment) for name, c in model.constants.items() if name in numbers}
    return Knobs(numbers, tuple(p.name for p in model.profiles), described)


def _numeric(value: Any) -> bool:
    if isinstance(value, tuple):
        return bool(value) and all(_numeric(v) for v in value)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _mentions(tokens: list[Token], m: Knobs) -> tuple[list[Mention], bool]:
    """The constants named, in text order, and whether some named constant was ambiguous."""
    heads: dict[str, int] = {}
    for name in m.numbers:
        for word in {stem(w) for w in name.lower().split("_")}:
            heads[word] = heads.get(word, 0) + 1
    found = [x for name in m.numbers if (x := _find(tokens, name, heads)) is not None]
    kept, ambiguous = [], False
    for mention in sorted(found, key=lambda x: -len(x.positions)):
        rivals = [k for k in kept if set(k.positions) & set(mention.positions)]
        if not rivals:
            kept.append(mention)
        elif any(len(r.positions) == len(mention.positions) for r in rivals):
            ambiguous = True
    return sorted(kept, key=lambda x: x.start), ambiguous


# ---------------------------------------------------------------------------------------------- values


def _value(tokens: list[Token], lo: int, hi: int) -> tuple[Any, tuple[str, float] | None, bool]:
    """(absolute value, relative change, understood) of the tokens [lo, hi): the value after an arrow or 'to', the
    one number left once 'from X' / 'instead of X' are set aside, a factor word (halve, double), or a change 'by N',
    'by N%', 'by a factor of N' in the direction its verb says (raise, lower...)."""
    span = list(range(lo, hi))
    for i in span:
        if tokens[i].kind == "arrow":
            after = [j for j in span if j > i and tokens[j].kind == "num"]
            return (tokens[after[0]], None, True) if after else (None, None, False)
    old, by = set(), None
    for i in span:
        for marker in FROM_MARKERS:
            if _words_at(tokens, i, hi, marker) and i + len(marker) < hi and tokens[i + len(marker)].kind == "num":
                old.add(i + len(marker))
        for marker in (("by", "a", "factor", "of"), ("by",)):
            if by is None and _words_at(tokens, i, hi, marker) and i + len(marker) < hi \
                    and tokens[i + len(marker)].kind == "num":
                by = (i + len(marker), len(marker) > 1)
    numbers = [j for j in span if tokens[j].kind == "num" and j not in old]
    factors = [FACTORS[tokens[j].value] for j in span if tokens[j].kind == "word" and tokens[j].value in FACTORS]
    if by is not None and numbers == [by[0]] and not factors:
        way = {1 if t.value in UP else -1 for t in tokens[lo:hi] if t.kind == "word" and t.value in UP | DOWN}
        amount = tokens[by[0]]
        if len(way) != 1 or isinstance(amount.value, tuple):
            return None, None, False
        sign = way.pop()
        if by[1]:
            return None, ("mul", amount.value ** sign), True
        if amount.percent:
            return None, ("mul", 1 + sign * amount.value / 100), True
        return None, ("add", sign * amount.value), True
    if numbers and len({repr(tokens[j].value) for j in numbers}) == 1 and not factors:  # one value, maybe said twice
        return tokens[numbers[-1]], None, True
    if not numbers and len(factors) == 1:
        return None, ("mul", factors[0]), True
    return None, None, not numbers and not factors  # no value at all is not a misreading; several are


def _words_at(tokens: list[Token], i: int, hi: int, words: tuple[str, ...]) -> bool:
    return all(i + k < hi and tokens[i + k].kind == "word" and tokens[i + k].value == w for k, w in enumerate(words))


def _resolve(name: str, token: Token | None, change: tuple[str, float] | None, m: Knobs) -> dict[str, str] | None:
    """The constant's new value per profile (only where it changes), None when it cannot be placed."""
    out = {}
    for profile in m.profiles:
        now = m.numbers.get(name, {}).get(profile)
        if change is not None:
            if not isinstance(now, int | float) or isinstance(now, bool):
                return None
            value: Any = now * change[1] if change[0] == "mul" else now + change[1]
        elif token is not None:
            value = token.value
            if isinstance(now, tuple) != isinstance(value, tuple):
                return None
            if token.percent and isinstance(now, int | float) and abs(now) <= 1:
                value = value / 100
        else:
            return None
        if isinstance(now, int) and not isinstance(value, tuple) and float(value).is_integer():
            value = int(value)
        if isinstance(value, float) and not math.isfinite(value):
            return None
        shown = canonical_value(value)
        if shown != canonical_value(now):
            out[profile] = shown
    return out


# ---------------------------------------------------------------------------------------------- reading


def read(title: str, rationale: str, train_py: str) -> Changes:
    """The reading of an idea against the train.py it was proposed on: the title decides; the rationale only
    gives a value the title leaves out for a constant the title names."""
    m = knobs(train_py)
    tokens = tokenize(title)
    mentions, ambiguous = _mentions(tokens, m)
    constants: dict[str, dict[str, str]] = {}
    unread = {"?ambiguous"} if ambiguous else set()
    for k, mention in enumerate(mentions):  # each mention owns the numbers up to the next (the first, those before it)
        lo, hi = (0 if k == 0 else mention.end + 1), (mentions[k + 1].start if k + 1 < len(mentions) else len(tokens))
        for i in mention.positions:
            tokens[i].used = True
        token, change, understood = _value(tokens, lo, hi)
        if token is None and change is None and understood and rationale:
            token, change, understood = _from_rationale(mention.name, rationale, m)
        values = _resolve(mention.name, token, change, m) if understood else None
        if values is None:
            unread.add(f"?{mention.name}")  # named, but its value not understood
            continue
        constants[mention.name] = values
        for i in range(lo, hi):
            if tokens[i].kind in ("num", "arrow", "eq") or tokens[i].kind == "word" and tokens[i].value in AMOUNT_WORDS:
                tokens[i].used = True
    _mark_old_states(tokens)
    words = content_words(" ".join(t.value for t in tokens if not t.used and t.kind == "word"
                                   and (t.value not in UP | DOWN or not constants)))
    if not constants:  # a technique in words, compared with the techniques past experiments named
        numbers = frozenset(t.text.lower() for t in tokens if t.kind == "num")
        return Changes(words=words | numbers, complete=False, source="reading")
    described = frozenset().union(*(m.described.get(name, frozenset()) for name in constants))
    unread |= {w for w in words if w != "on" and not any(word_match(w, d) for d in described)}
    unread |= {t.text for t in tokens if t.kind == "num" and not t.used}
    # what a reading did not understand stays with it: two readings that leave the same words are still comparable
    return Changes({k: v for k, v in constants.items() if v}, words=frozenset(unread), complete=not unread,
                   source="reading")


def _mark_old_states(tokens: list[Token]) -> None:
    """Words naming what is replaced are not the change: 'QK-norm: on -> off', 'from ReLU to GELU', 'GELU instead
    of ReLU'."""
    for i, tok in enumerate(tokens):
        if tok.kind == "arrow":
            eq = next((j for j in range(i - 1, max(-1, i - 4), -1) if tokens[j].kind == "eq"), None)
            for j in range(i - 1 if eq is None else eq, i):
                tokens[j].used = True
            tok.used = True
        elif tok.kind == "word" and tok.value == "from":
            to = next((j for j in range(i + 1, len(tokens)) if tokens[j].value == "to"), None)
            for j in range(i, to + 1 if to is not None else i + 1):
                tokens[j].used = True
        elif tok.kind == "word" and tok.value in ("instead", "rather"):
            for t in tokens[i:]:
                t.used = True


def _from_rationale(name: str, rationale: str, m: Knobs) -> tuple[Token | None, tuple[str, float] | None, bool]:
    tokens = tokenize(rationale)
    mentions, _ = _mentions(tokens, m)
    for k, mention in enumerate(mentions):
        if mention.name == name:
            hi = mentions[k + 1].start if k + 1 < len(mentions) else len(tokens)
            token, change, understood = _value(tokens, mention.end + 1, hi)
            if understood and (token is not None or change is not None):
                return token, change, True
    return None, None, True
