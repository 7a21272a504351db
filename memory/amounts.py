"""How much an idea changes a knob: "0.04 -> 0.03", "from 8 to 10", "halve", "by 25%", "a third more",
"10x smaller", "four more layers", "start decaying at 40% of training".

`read_amount` scans the tokens a mention owns and returns an `Amount`: an absolute value, a factor, an
addition, or a phase boundary; `resolve` turns it into the new value against the knob's current value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from memory.lexicon import DOWN_WORDS, MULTIPLIERS, UP_WORDS
from memory.wording import Token, stem

_UP = frozenset(stem(w) for w in UP_WORDS for w in w.split()[-1:])
_DOWN = frozenset(stem(w) for w in DOWN_WORDS for w in w.split()[-1:])
_MULTIPLIERS = {stem(w): f for w, f in MULTIPLIERS.items()}
_COMPARATIVE_UP = frozenset(stem(w) for w in ("more", "larger", "bigger", "higher", "wider", "longer", "greater",
                                               "deeper", "heavier", "stronger", "extra", "up", "faster", "additional"))
_COMPARATIVE_DOWN = frozenset(stem(w) for w in ("less", "fewer", "smaller", "lower", "narrower", "shorter",
                                                 "shallower", "lighter", "weaker", "down", "slower"))
_TO = frozenset({"to", "->", "=", ":", "at", "of", "becom", "into"})
_FROM = frozenset({"from", "was", "current", "currently"})
_INSTEAD = ("instead", "rather")
_DIVIDE = frozenset(stem(w) for w in ("divided", "divide", "dividing", "divides"))
_MULTIPLY = frozenset(stem(w) for w in ("multiply", "multiplied", "multiplying", "multiplies", "scale", "scaled"))
_PERCENT = frozenset({"%", "percent", "pct"})
_TIMES = frozenset({"x", "time", "fold", "*"})
_RUN = frozenset(stem(w) for w in ("training", "run", "budget", "time", "peak", "schedule", "steps"))
_PHASE_START = frozenset(stem(w) for w in ("first", "start", "begin", "after", "into", "until", "hold", "flat",
                                            "constant", "stable", "keep", "stay", "peak"))
_WIDTH_WORDS = frozenset({"d", "dim", "width", "the", "a", "model", "hidden", "d_model", "embd"})
# "X is too small" asks for a larger X
_TOO_UP = frozenset(stem(w) for w in ("small", "low", "short", "few", "little", "weak", "slow", "tight", "narrow",
                                      "shallow", "smaller", "lower", "conservative", "timid"))
_TOO_DOWN = frozenset(stem(w) for w in ("big", "large", "high", "long", "many", "much", "strong", "fast", "loose",
                                        "wide", "deep", "aggressive", "bigger", "larger", "higher", "hot"))
_OF_CURRENT = frozenset({"the", "it", "current", "what", "today"})  # "3/4 of the current / of its / of what it is"
_PHASE_END = frozenset(stem(w) for w in ("last", "final", "end", "over", "remaining"))


@dataclass(frozen=True)
class Amount:
    kind: str  # "absolute" | "factor" | "delta" | "complement" (1 - p: a terminal phase said from its start)
    value: Any  # a float, or a tuple of floats for tuple knobs
    old: Any = None
    approx: bool = False  # written with k / M / million: rounding is expected


def direction_of(tokens: list[Token]) -> int:
    """+1 / -1 from the direction words among `tokens` (0 when none or both). "Too small" asks for more."""
    up = down = False
    for k, t in enumerate(tokens):
        if t.kind != "word":
            continue
        if _word(tokens, k - 1) == "too" and t.text in _TOO_UP | _TOO_DOWN:
            up, down = up or t.text in _TOO_UP, down or t.text in _TOO_DOWN
        elif _word(tokens, k - 1) != "too":
            up, down = up or t.text in _UP, down or t.text in _DOWN
    factor = [_MULTIPLIERS[t.text] for t in tokens if t.kind == "word" and t.text in _MULTIPLIERS]
    if factor:
        up, down = factor[0] > 1, factor[0] < 1
    return 1 if up and not down else -1 if down and not up else 0


def _word(tokens: list[Token], i: int) -> str:
    return tokens[i].text if 0 <= i < len(tokens) else ""


def _tuple_at(tokens: list[Token], i: int) -> tuple[tuple[float, ...], int] | None:
    """`( 0.8 , 0.95 )` starting at i (the parenthesis): the tuple and the index after it."""
    if _word(tokens, i) != "(":
        return None
    values, j = [], i + 1
    while j < len(tokens) and tokens[j].text != ")":
        if tokens[j].kind == "number":
            values.append(float(tokens[j].value))
        elif tokens[j].text != ",":
            return None
        j += 1
    return (tuple(values), j + 1) if len(values) >= 2 and j < len(tokens) else None


def read_amount(tokens: list[Token], *, fraction_like: bool, terminal_phase: bool, is_tuple: bool,
                multiple: bool = False) -> Amount | None:
    """The amount stated among a mention's tokens, or None when only a direction (or nothing) is said. A knob that
    is itself a multiple (an expansion ratio) or a fraction reads "5.5x" as its value, not as a factor."""
    tokens = [Token("0", "number", 0.0, "0") if t.text == "zero" and _word(tokens, k - 1) in _TO else t
              for k, t in enumerate(tokens)]
    tokens = _first_branch(tokens)
    direction = direction_of(tokens)
    tuples = []
    i = 0
    while i < len(tokens):
        found = _tuple_at(tokens, i)
        if found:
            tuples.append((i, found[0]))
            i = found[1]
        else:
            i += 1
    if is_tuple and tuples:
        old = tuples[0][1] if len(tuples) > 1 else None
        return Amount("absolute", tuples[-1][1], old)
    numbers = [(i, t) for i, t in enumerate(tokens) if t.kind == "number" and not _inside_tuple(i, tuples)]
    if is_tuple and len(numbers) >= 2 and all(0 < t.value < 1 for _, t in numbers[-2:]):
        return Amount("absolute", (float(numbers[-2][1].value), float(numbers[-1][1].value)))
    if not numbers:
        for t in tokens:
            if t.kind == "word" and t.text in _MULTIPLIERS:
                return Amount("factor", _MULTIPLIERS[t.text])
        return None
    # from X to Y / X -> Y / Y instead of X
    for k, (i, t) in enumerate(numbers[:-1]):
        j, nxt = numbers[k + 1]
        between = {x.text for x in tokens[i + 1 : j]}
        if between & {"->", "to"} and j - i <= 3:
            return Amount("absolute", _scaled(nxt, tokens, j, fraction_like), _scaled(t, tokens, i, fraction_like),
                          _approx(t) or _approx(nxt))
    for k, (i, t) in enumerate(numbers):
        if _word(tokens, i + 1) in _INSTEAD and k > 0:
            return Amount("absolute", _scaled(numbers[k - 1][1], tokens, numbers[k - 1][0], fraction_like),
                          _scaled(t, tokens, i, fraction_like))
    old = None
    candidates = []
    for i, t in numbers:
        before, before2 = _word(tokens, i - 1), _word(tokens, i - 2)
        if before == "^" or (before == "*" and before2 == "*"):
            continue  # an exponent in a formula ("logsumexp(logits)**2")
        if before in _FROM or before in _INSTEAD or (before in ("of", "than") and before2 in _INSTEAD) or (
                before == "now" and before2 == "("):  # "(now 128)": the value it has
            old = _scaled(t, tokens, i, fraction_like)
            continue
        candidates.append((i, t))
    if not candidates:
        return None
    i, t = candidates[-1]
    value = float(t.value)
    verbs = {x.text for x in tokens[:i]}
    if value and _word(tokens, i - 1) == "by" and (_word(tokens, i - 2) in _DIVIDE or verbs & _DIVIDE):
        return Amount("factor", 1 / value)  # "lr /2", "divide the head LR by 3"
    if value and _word(tokens, i - 1) == "by" and verbs & _MULTIPLY:
        return Amount("factor", value)  # "multiply it by 4"
    after, after2 = _word(tokens, i + 1), _word(tokens, i + 2)
    before = _word(tokens, i - 1)
    percent = after in _PERCENT
    if percent:
        after, after2 = after2, _word(tokens, i + 3)
    names_width = after2 in _WIDTH_WORDS
    if after == "x" and not names_width and not multiple and not fraction_like \
            and _word(tokens, i + 2) not in _NUMBERS_AHEAD(tokens, i + 2):
        factor = value  # "2x Muon LR", "head lr 2x"
        if direction < 0 or after2 in _COMPARATIVE_DOWN:
            factor = 1 / value if value > 1 else value
        return Amount("factor", factor)
    if before == "x" or (after in _TIMES and not names_width and (
            after2 in _COMPARATIVE_UP | _COMPARATIVE_DOWN | {"as", "it", "current"} or direction)):
        factor = value
        if direction < 0 or after2 in _COMPARATIVE_DOWN:
            factor = 1 / value if value > 1 else value
        return Amount("factor", factor)
    if _word(tokens, i - 1) == "of" and _word(tokens, i - 2) == "factor" and "by" in (_word(tokens, i - 3),
                                                                                    _word(tokens, i - 4)):
        return Amount("factor", 1 / value if direction < 0 and value > 1 else value)
    if after2 in _COMPARATIVE_UP | _COMPARATIVE_DOWN and after not in _TIMES and after not in _PERCENT \
            and not t.text.count("/") and tokens[i + 1].kind == "word":  # "two layers deeper"
        return Amount("delta", (1 if after2 in _COMPARATIVE_UP else -1) * value)
    if after in _COMPARATIVE_UP | _COMPARATIVE_DOWN:
        sign = 1 if after in _COMPARATIVE_UP else -1
        if percent:
            return Amount("factor", 1 + sign * value / 100)
        if t.text.count("/") or value < 1 and not fraction_like:
            return Amount("factor", 1 + sign * value)
        return Amount("delta", sign * value)
    if before == "by":
        if percent:
            return Amount("factor", 1 + (direction or 1) * value / 100)
        if t.text.count("/"):
            return Amount("factor", 1 + (direction or 1) * value)
        if direction:
            return Amount("delta", direction * value)
    of_current = after == "of" and after2 in _OF_CURRENT and not fraction_like
    if t.text.count("/") and value < 1 and not fraction_like and (t.text.startswith("1/") and (
            after in ("of", "the") or before in ("to", "by")) or of_current):
        return Amount("factor", value)  # "a third of the current", "cut it to a third", "three quarters of its"
    if percent and of_current:
        return Amount("factor", value / 100)  # "75 % of the current Muon LR"
    if t.text.count("/") and fraction_like:
        window = {x.text for x in tokens[max(0, i - 8) : i]}
        if terminal_phase and window & _PHASE_START and not window & _PHASE_END:
            return Amount("complement", value, old)
        return Amount("absolute", value, old)
    if percent:
        p = value / 100
        window = {x.text for x in tokens[max(0, i - 8) : i]}
        if terminal_phase and window & _PHASE_START and not window & _PHASE_END:
            return Amount("complement", p, old)
        if fraction_like or after in _RUN or after2 in _RUN:
            return Amount("absolute", p, old)
        return Amount("factor", 1 + (direction or 1) * p)
    return Amount("absolute", _scaled(t, tokens, i, fraction_like), old, _approx(t))


def _NUMBERS_AHEAD(tokens: list[Token], i: int) -> set[str]:
    """The text at i when it is a number ("2 x 3" multiplies), else nothing."""
    return {tokens[i].text} if 0 <= i < len(tokens) and tokens[i].kind == "number" else set()


def _first_branch(tokens: list[Token]) -> list[Token]:
    """`30.0 if CUDA else 0.0` (a constant written per device): the first branch is the setting meant."""
    for k, t in enumerate(tokens[:-3]):
        if t.kind == "number" and tokens[k + 1].text == "if":
            end = next((j for j in range(k + 2, min(len(tokens), k + 6)) if tokens[j].text == stem("else")), None)
            if end is not None and end + 1 < len(tokens) and tokens[end + 1].kind == "number":
                return tokens[: k + 1] + tokens[end + 2 :]
    return tokens


def _inside_tuple(i: int, tuples: list[tuple[int, tuple]]) -> bool:
    return any(start <= i <= start + 2 * len(values) for start, values in tuples)


def _scaled(token: Token, tokens: list[Token], i: int, fraction_like: bool) -> float:
    value = float(token.value)
    if _word(tokens, i + 1) in _PERCENT and fraction_like:
        return value / 100
    return value


def _approx(token: Token) -> bool:
    return token.raw[-1:].isalpha() if token.raw else False


def resolve(amount: Amount, current: Any, element: int | None = None) -> Any:
    """The new value of a knob whose value is `current`, or None when it cannot be worked out."""
    if element is not None and isinstance(current, tuple):
        new = resolve(amount, current[element])
        if new is None:
            return None
        return tuple(new if k == element else v for k, v in enumerate(current))
    if amount.kind == "absolute":
        return amount.value
    if amount.kind == "complement":
        return 1 - amount.value
    if isinstance(current, tuple) or current is None:
        return None
    if amount.kind == "factor":
        return current * amount.value
    if amount.kind == "delta":
        return current + amount.value
    return None


def values_match(a: Any, b: Any) -> bool:
    """Equal up to rounding: 2 % relative (0.333 and 1/3, 85 and 85.33), 5 % for large powers of two written
    in round numbers (512k tokens and 2**19, a million and 2**20)."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) and all(
            values_match(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    a, b = float(a), float(b)
    if a == b:
        return True
    if 0.5 < a < 1 and 0.5 < b < 1:  # decays and momenta: what matters is the distance to 1
        a, b = 1 - a, 1 - b
    scale = max(abs(a), abs(b))
    if abs(a - b) <= (0.025 if scale >= 1000 else 0.02) * scale + 1e-12:  # 384k tokens may mean 384 * 1024
        return True
    if scale >= 1000 and abs(a - b) <= 0.05 * scale:
        return any(_power_of_two(v) for v in (a, b))
    return False


def _power_of_two(value: float) -> bool:
    n = int(round(value))
    return n > 0 and abs(value - n) < 1e-9 and n & (n - 1) == 0
