"""Words to tokens: normalisation, numbers written in words, stemming and phrase matching.

Ideas and train.py's names and comments are read through the same functions, so "normalise the
queries", "QK-normalization" and `qk_norm` meet on the same tokens.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import snowballstemmer
from text_to_num import alpha2digit

from memory.lexicon import FRACTIONS, SCALE_SUFFIXES

_STEMMER = snowballstemmer.stemmer("english")
_STEMMER_LOCK = threading.Lock()  # a snowball stemmer keeps the word it works on: one thread at a time
_SYMBOLS = {
    "→": " -> ", "⟶": " -> ", "⇒": " -> ", "=>": " -> ", "➝": " -> ", "×": " x ", "·": " * ", "²": "^2", "³": "^3",
    "–": "-", "—": " - ", "−": "-", "‘": "'", "’": "'", "“": '"', "”": '"', "β": "beta", "θ": "theta", "≈": " ~ ",
    "λ": "lambda", "…": " ", "μ": " mu ", "µ": " mu ",
}
_BRITISH = re.compile(r"\b(\w{3,}?)is(e|es|ed|ing|ation|ations|er|ers)\b")
_WORD_NUMBER_FRACTION = re.compile(
    r"\b(a|an|one|two|three|four|five|six|seven|eight|nine|last|first|final|\d+)\s+(" + "|".join(FRACTIONS) + r")\b")
_SMALL = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
          "nine": 9}
_NEGATED = {"can": "can", "won": "will", "don": "do", "doesn": "does", "didn": "did", "isn": "is", "aren": "are",
            "wasn": "was", "shouldn": "should", "wouldn": "would", "haven": "have", "hasn": "has"}
_MODEL_NAME = re.compile(r"\b(gpt|gemma|llama|palm|mistral|mixtral|qwen|olmo|deepseek|phi|t5|bert|falcon|pythia)"
                         r"\s*-?\s*(\d+(?:\.\d+)?)\b")
_RETRY_COUNT = re.compile(r"\b(?:take|attempt|round)\s*#?\s*(?:two|three|four|2|3|4)\b(?=\s*(?:[,.;:)!?]|$))")
_DIVIDED = re.compile(r"(\S*)\s+/\s*(?=\d)|^/\s*(?=\d)")
_HEADS_OF = re.compile(r"\bheads? of (?:size |dimension |dimensionality |width |dim )?(\d+) ?"
                       r"(?:dims?|dimensions?|d|channels)?(?: each)?\b"
                       r"|\bheads? (?:each )?(\d+) (?:wide|dims? wide|channels wide)\b")  # "every head 64 wide"
_NO_DECAY_TO_ZERO = re.compile(r"\b(?:do not|never|not)\s+(?:decay|anneal|cool)\w*\s+(?:the\s+)?(?:learning rate\s+|lr\s+)?"
                               r"(?:all the way\s+)?(?:down\s+)?to\s+(?:zero|0)\b")
_TAKEN_BACK = r"\s*(?:\.\.\.|…)\s*(?:actually|no|i mean|or rather|rather|sorry|wait)\b[,:]?\s*"
_CORRECTED_NUMBER = re.compile(r"\d[\d.,]*(?<!\.)" + _TAKEN_BACK + r"(?=\d)", re.IGNORECASE)  # "0.2... no, 0.1"
_CORRECTED = re.compile(r"(?:^|(?<=[,;:!?(])|(?<=\.\s)|(?<=\band\s))((?:(?!\band\b|\.\.\.|…|\.\s)[^,;:!?(])*?)"
                        + _TAKEN_BACK, re.IGNORECASE)


def _taken_back(match: re.Match) -> str:
    """What a correction replaces: from the word it repeats ("until halfway... actually until 65%"), else all of
    the phrase before it ("untie... actually tie")."""
    said = match.group(1)
    following = re.match(r"\s*(\w+)", match.string[match.end():])
    if following:
        repeated = [m.start() for m in re.finditer(rf"\b{re.escape(following.group(1))}\b", said, re.IGNORECASE)]
        if repeated:
            return said[: repeated[-1]]
    return ""
_CALL = re.compile(r"(?<=[a-z0-9_])\(([^()]*)\)")
_UNDONE = re.compile(r"\bun(normali[sz]ed|capped|clipped|regulari[sz]ed|scaled|gated|biased|shared|tied)\b")
_HYPHENATED_NUMBER_WORDS = re.compile(r"\b([a-z]+)-(?=[a-z])")
_NUMBER_RE = (
    r"(?P<pow>\d+(?:\.\d+)?\s*(?:\*\*|\^)\s*-?\d+)"
    r"|(?P<frac>\d+\s*/\s*\d+(?![\d.]))"
    r"|(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+(?:e[-+]?\d+)?|\d+(?:e[-+]?\d+)?)"
)
_TOKEN = re.compile(
    r"(?P<ord>\d+(?:st|nd|rd|th)\b)|"
    + _NUMBER_RE
    + r"|(?P<arrow>->|-->|=>)"
    + r"|(?P<word>[a-z][a-z0-9]*(?:'s)?)"
    + r"|(?P<sym>[%=:;,()+*/^~x<>\[\]!?-])"
)


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    with _STEMMER_LOCK:
        return _STEMMER.stemWord(word)


@lru_cache(maxsize=4096)
def normalise(text: str) -> str:
    """Lower case, one spelling (American), arrows and symbols spelled one way, numbers as digits."""
    text = unicodedata.normalize("NFKC", text)
    text = _CORRECTED.sub(_taken_back, _CORRECTED_NUMBER.sub("", text))  # "untie... actually tie": taken back, not the idea
    for symbol, replacement in _SYMBOLS.items():
        text = text.replace(symbol, replacement)
    text = text.lower()
    text = re.sub(r"\bnormal\s*\(\s*0(?:\.0)?\s*,\s*(\d*\.?\d+(?:e-?\d+)?)\s*\)", r"normal init std \1", text)
    while (unwrapped := _CALL.sub(r" \1 ", text)) != text:  # code: "zeros_(self.wte.weight)" is no aside
        text = unwrapped
    text = text.replace("_", " ")
    text = re.sub(r"\b(can|won|don|doesn|didn|isn|aren|wasn|shouldn|wouldn|haven|hasn)'t\b",
                  lambda m: _NEGATED.get(m.group(1), m.group(1)) + " not", text)
    text = _MODEL_NAME.sub(r"\1\2", text)  # "Gemma 2 style", "GPT-2 init": a name, not a value
    text = _RETRY_COUNT.sub(" ", text)
    text = re.sub(r"\b(?:once more|one more time|once again)\b", "again", text)  # a retry, not "more"  # "take two", "attempt 2": which try this is, not a setting
    text = re.sub(r"\bhalf an? dozen\b", "6", text)
    text = re.sub(r"\b(?:a|one) dozen\b", "12", text)
    text = _BRITISH.sub(lambda m: f"{m.group(1)}iz{m.group(2)}", text)
    text = re.sub(r"(?<=[a-z])\.(?=[a-z])", " ", text)
    text = re.sub(r"(?<=\b[a-z]) ?\* ?(?=[a-z])", " times ", text)  # "x * sigmoid(x)": a product of names  # torch.compile, F.gelu, lm_head.weight
    text = re.sub(r"(?<=[a-z0-9])/(?=[a-z])", " ", text)  # key/value, resid/x0
    text = _DIVIDED.sub(_divided, text)  # "lr /2" (but not the x / 15 of a formula)
    text = re.sub(r"\bx(?=(?:\d*\.\d+|[1-9]\d*)\b)", "x ", text)  # x0.5, x2 (but not x0, the initial embedding)
    text = re.sub(r"\b([a-z]+)fold\b", r"\1 fold", text)  # tenfold, twofold
    text = _HYPHENATED_NUMBER_WORDS.sub(r"\1 ", text)  # one-million-token, SiLU-gated, feed-forward
    text = _WORD_NUMBER_FRACTION.sub(_fraction, text)
    # "decay to zero" says where the decay ends, which is train.py's own default: no change of the decay itself
    text = re.sub(r"\b(decay\w*|anneal\w*|cool\w*|warmdown)\s+(?:all the way\s+)?to\s+(?:zero|0)\b", r"\1", text)
    text = re.sub(r"\s+hundredths?\b", " /100", re.sub(r"\s+thousandths?\b", " /1000", text))
    text = re.sub(r"(?<=\d)-(?=[a-z])", " ", text)  # 64-dimensional, 10-layer
    text = re.sub(r"\b(?:block|layer)\s+0\b(?!\s*(?:->|to\b))", "first layer", text)  # "the V of block 0"
    text = re.sub(r"(?<!\bn )(?<!\bnum )\b(?:block|layer)\s+(?:\d+|[a-z])\b(?!\s*(?:->|to\b|%|percent\b|x\b|times\b))", "somewhere",
                  text)  # "before block 3"
    text = _UNDONE.sub(r"not \1", text)  # "unnormalised", "uncapped": the technique without
    text = _HEADS_OF.sub(lambda m: f"head dim {m.group(1) or m.group(2)}", text)  # "heads of 64 dims each": the size of a head
    text = _NO_DECAY_TO_ZERO.sub("raise the final lr", text)  # the end of the schedule above zero
    text = re.sub(r"\bramp(?:ing|s)? (?:it |them |the (?:lr|learning rate) )?down\b", "ramp down", text)
    text = re.sub(r"\b(?:a|one) single\b", "1", text)
    text = re.sub(r"\bhalf an? (million|thousand|billion)\b",
                  lambda m: {"million": "500000", "thousand": "500", "billion": "500000000"}[m.group(1)], text)
    text = re.sub(r"\b(?:end|finish|stop)(?:s|ing)? (?:the )?(?:warmdown|decay|cooldown|schedule|anneal\w*) at\b",
                  "final lr at", text)  # where the schedule ends is its floor
    text = re.sub(r"\b(?:warmdown|decay|cooldown|schedule|anneal\w*) (?:should |will |would |must |can )?"
                  r"(?:end|finish|stop)(?:s|ed|ped|ing)? at\b", "final lr at", text)  # (the other order)
    text = re.sub(r"\b(?:warm|ramp)(?:s|ing)? (?:the |its )?([a-z][^,;:]{0,40}?) up\b", r"warmup \1", text)
    text = re.sub(r"\b(?:is|are|was|has|have|'s) (?:currently |now )?(zero|\d[\d.,]*)"
                  r"(?: right now| now| currently| at the moment| today)\b",
                  lambda m: f"currently {'0' if m.group(1) == 'zero' else m.group(1)}", text)
    text = re.sub(r"\bnow (?:it|this|that|we) (?:is|has|have|use) (zero|\d[\d.,]*)\b",
                  lambda m: f"currently {'0' if m.group(1) == 'zero' else m.group(1)}", text)
    # "the head" alone, or beside the embeddings, is the output head ("the head dimension" is not)
    text = re.sub(r"\b(embeddings?|wte|embedding table),?\s+(?:and\s+)?(?:the\s+)?head\b", r"\1 and lm head", text)
    text = re.sub(r"\bthe head\b(?!\s*(?:dim|size|count|width|of\b))", "the lm head", text)
    try:
        text = alpha2digit(text, "en", threshold=1)
    except Exception:  # the converter is an aid: a text it cannot handle is read as written
        pass
    text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", r"\1\2", text)
    text = re.sub(r"\b(\d+) dozens?\b", lambda m: str(12 * int(m.group(1))), text)
    return " ".join(text.split())


def _divided(match: re.Match) -> str:
    before = match.group(1) or ""
    if len(before) < 2 or not before.isalnum():  # "x / 15", "(s / 50": a formula's division
        return match.group(0)
    return f"{before} divided by "


def _fraction(match: re.Match) -> str:
    count, word = match.group(1), match.group(2)
    if count in ("last", "first", "final"):  # "the last quarter" of a schedule
        return f"{count} 1/{FRACTIONS[word]} "
    numerator = int(count) if count.isdigit() else _SMALL[count]
    return f" {numerator}/{FRACTIONS[word]} "


@dataclass(frozen=True)
class Token:
    text: str  # the normalised surface form (a word's stem for words)
    kind: str  # "word", "number", "symbol"
    value: float | None = None  # numbers
    raw: str = ""  # the word before stemming / the number as written


def _number_value(kind: str, text: str) -> float | None:
    try:
        if kind == "pow":
            base, exponent = re.split(r"\*\*|\^", text.replace(" ", ""))
            return float(base) ** float(exponent) if abs(float(exponent)) <= 64 else None
        if kind == "frac":
            num, den = (float(p) for p in text.replace(" ", "").split("/"))
            return num / den if den else None
        return float(text.replace(",", ""))
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def tokenize(text: str) -> tuple[Token, ...]:
    """Tokens of a normalised text: stemmed words, numbers (with their value; 512k, 2**19 and 1/3 included)
    and the symbols that carry meaning (->, %, x, =, parentheses...)."""
    tokens: list[Token] = []
    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        raw = match.group(0)
        if kind in ("pow", "frac", "num"):
            value = _number_value(kind, raw)
            if value is not None:
                tokens.append(Token(raw.replace(" ", ""), "number", value, raw))
        elif kind == "ord":
            tokens.append(Token(raw, "word", raw=raw))
        elif kind == "arrow":
            tokens.append(Token("->", "symbol", raw=raw))
        elif kind == "word":
            word = raw[:-2] if raw.endswith("'s") else raw
            if tokens and tokens[-1].kind == "number" and word in SCALE_SUFFIXES and tokens[-1].value is not None:
                last = tokens[-1]
                tokens[-1] = Token(last.text + word, "number", last.value * SCALE_SUFFIXES[word], last.raw + word)
                continue
            tokens.append(Token(stem(word), "word", raw=word))
        else:
            tokens.append(Token(raw, "symbol", raw=raw))
    return tuple(_products(tokens))


def _products(tokens: list[Token]) -> list[Token]:
    """`3 * 2**18` is one number (786432)."""
    out: list[Token] = []
    for t in tokens:
        if t.kind == "number" and len(out) >= 2 and out[-1].text == "*" and out[-2].kind == "number":
            a = out[-2]
            out[-2:] = [Token(f"{a.text}*{t.text}", "number", a.value * t.value, f"{a.raw} * {t.raw}")]
        else:
            out.append(t)
    return out


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    return tuple(t.text for t in tokenize(normalise(phrase)))


class PhraseMatcher:
    """Longest-first matching of phrases (token sequences) to the concepts they stand for."""

    def __init__(self, table: Mapping[str, Iterable[str]]):
        self._phrases: dict[tuple[str, ...], frozenset[str]] = {}
        for phrase, concepts in table.items():
            key = phrase_tokens(phrase)
            if key:
                self._phrases[key] = self._phrases.get(key, frozenset()) | frozenset(concepts)
        self._longest = max((len(k) for k in self._phrases), default=0)

    def match(self, tokens: tuple[Token, ...]) -> list[tuple[int, int, frozenset[str]]]:
        """(start, end, concepts) of the phrases found, left to right: the reading that covers the most tokens,
        then the one with fewer (longer) phrases, so "attention head dimension" is attention + head dimension."""
        texts = [t.text for t in tokens]
        n = len(texts)
        # best[i]: (tokens covered, -phrases used, first phrase length) for texts[i:]
        best: list[tuple[int, int, int]] = [(0, 0, 0)] * (n + 1)
        for i in range(n - 1, -1, -1):
            choice = (best[i + 1][0], best[i + 1][1], 0)
            for length in range(min(self._longest, n - i), 0, -1):
                if tuple(texts[i : i + length]) in self._phrases:
                    after = best[i + length]
                    option = (after[0] + length, after[1] - 1, length)
                    if option[:2] > choice[:2] or (option[:2] == choice[:2] and choice[2] == 0):
                        choice = option  # on a tie, a phrase starting here beats one starting later
            best[i] = choice
        found, i = [], 0
        while i < n:
            length = best[i][2]
            if length:
                found.append((i, i + length, self._phrases[tuple(texts[i : i + length])]))
                i += length
            else:
                i += 1
        return found


def phrase_table(*tables: tuple[Mapping[str, Iterable[str]], str]) -> dict[str, set[str]]:
    """Merge {concept: phrases} tables into {phrase: concepts}; `prefix` names a table's concepts."""
    merged: dict[str, set[str]] = {}
    for table, prefix in tables:
        for concept, phrases in table.items():
            for phrase in phrases:
                merged.setdefault(phrase, set()).add(prefix + concept)
    return merged
