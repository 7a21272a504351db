"""Structured changes: what an idea declares and what an edit did, in one form the gate compares.

A `Changes` holds the constants a change sets (new value per device profile, only where it differs from the
train.py it was made on), the parts it rewrites with the technique named for each, and the code units its
fingerprint saw change. It comes from three places: an idea's declared `changes` (resolved against its train.py:
`MATRIX_LR = 0.6 * 0.05` and `0.03` are the same value; `8 if CUDA else 3` has a value per profile), a coded
edit's fingerprint (the authority once there is code), or the English reader (`memory.reader`, for ideas that
came without changes). `same` compares two of them on the device profile a run uses; `mismatch` names where an
edit's fingerprint departs from what its idea declared.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agents import trainpy
from memory.fingerprint import ChangeFingerprint

_MODULE_UNIT = trainpy.MODULE_UNIT
_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
# General English of change requests (fixed: the reader does not grow phrase by phrase)
STOP_WORDS = frozenset("""a an the of to for in at by with and or its it from into this that these those be is are
was were as our we i our their so than then only just also very bit little slightly more less much some all each
per every new again instead rather should could would think maybe perhaps please pls once retry rerun attempt
second same fixed""".split())
CHANGE_VERBS = frozenset("""set use using try change changing make let go going switch swap replace move adjust tune
turn put give keep apply run start bump push pull raise increase decrease lower reduce cut shrink grow widen narrow
scale halve double triple""".split())
OFF_WORDS = frozenset("off no without remove removing drop dropping disable disabling stop skip eliminate delete "
                      "omit".split())
ON_WORDS = frozenset("on enable enabling add adding introduce".split())


def profile_of(train_py: str, device: str | None) -> str:
    """The device profile a run on `device` ("cpu" / "cuda", default cpu) uses in this train.py."""
    return trainpy.read(train_py).profile(device or "cpu").name


def parts_of(train_py: str) -> tuple[str, ...]:
    """The functions, classes and methods of train.py an idea may name as parts."""
    return tuple(sorted(name for name in trainpy.read(train_py).units if name != _MODULE_UNIT))


def expression(value: str) -> Any:
    """A declared value as a syntax tree (parsed under the model's lock); SyntaxError unless it is one expression."""
    body = trainpy.private_tree(f"__value__ = {value}").body
    if len(body) != 1 or not isinstance(body[0], ast.Assign):
        raise SyntaxError(f"{value!r} is not one Python expression")
    return body[0].value


def evaluate(values: dict[str, str], train_py: str) -> dict[str, dict[str, str]]:
    """Per profile, the canonical value each constant takes when `values` (name -> Python expression) are
    assigned in train.py: evaluated against its constants and profile flags (`A if CUDA else B`). An expression
    that is not constant keeps its normalised source. SyntaxError for one that does not parse."""
    model = trainpy.read(train_py)
    nodes = {name: expression(value) for name, value in values.items()}
    out: dict[str, dict[str, str]] = {name: {} for name in values}
    for profile in model.profiles:
        env = {**model.values(profile.name), **profile.flags}
        for name, node in nodes.items():
            try:
                value = trainpy.evaluate(node, env)
            except trainpy.Opaque:
                out[name][profile.name] = ast.unparse(node)
                continue
            env[name] = value
            out[name][profile.name] = trainpy.canonical_value(value)
    return out


# ---------------------------------------------------------------------------------------------- changes


def stem(word: str) -> str:
    """A word without its plural ending ('matrices' -> 'matrix', 'heads' -> 'head'); stateless, so threads
    share it freely."""
    for ending, repl in (("ices", "ix"), ("ies", "y"), ("sses", "ss"), ("ches", "ch"), ("shes", "sh"), ("xes", "x")):
        if word.endswith(ending) and len(word) > len(ending) + 2:
            return word[: -len(ending)] + repl
    return word[:-1] if word.endswith("s") and not word.endswith(("ss", "us", "is")) and len(word) > 3 else word


@lru_cache(maxsize=4096)
def content_words(text: str) -> frozenset[str]:
    """What a phrase names, as a set of words: function words and the verbs of asking for a change left out,
    switching words as 'on' / 'off'. 'QK-norm off', 'turn qk norm off' and 'disable QK-norm' read the same."""
    out = set()
    for word in _WORD.findall(text.lower().replace("_", " ")):
        word = stem(word)
        if word in OFF_WORDS:
            out.add("off")
        elif word in ON_WORDS:
            out.add("on")
        elif word not in STOP_WORDS and word not in CHANGE_VERBS:
            out.add(word)
    return frozenset(out)


@dataclass(frozen=True)
class Changes:
    """One idea's or one edit's change, comparable whatever its wording."""

    constants: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> profile -> new, where it changes
    parts: dict[str, str] = field(default_factory=dict)  # part -> the technique named for it ("" unnamed)
    units: frozenset[str] = frozenset()  # code units an edit changed (its fingerprint)
    words: frozenset[str] = frozenset()  # a reading's words no constant explains (a technique named in words)
    complete: bool = True  # a reading understood everything its title asks; declared changes always are
    source: str = "declared"  # "declared" | "fingerprint" | "reading"

    def on(self, profile: str) -> dict[str, str]:
        """name -> new value for the constants this changes on `profile`."""
        return {name: per[profile] for name, per in self.constants.items() if profile in per}

    @property
    def signature(self) -> str:
        return "&".join(sorted(self.constants))

    @property
    def roots(self) -> frozenset[str]:
        """The top-level functions and classes touched (declared parts, changed units)."""
        if not self.parts and not self.units:
            return frozenset()
        return frozenset(p.split(".")[0] for p in (*self.parts, *self.units) if p != _MODULE_UNIT)

    def describe(self, profile: str | None = None) -> str:
        parts = []
        for name, per in sorted(self.constants.items()):
            if profile in per or len(set(per.values())) == 1 and profile is None:
                parts.append(f"{name} = {per.get(profile) or next(iter(per.values()))}")
            else:
                parts.append(f"{name} = " + ", ".join(f"{v} ({p})" for p, v in per.items()))
        parts += [f"{part}: {technique or 'changed'}" for part, technique in sorted(self.parts.items())]
        if self.words:
            parts.append("'" + " ".join(sorted(self.words)) + "'")
        return "; ".join(parts) or "no recognised change"

    def to_json(self) -> str:
        return json.dumps({"c": self.constants, "p": self.parts,
                           "u": sorted(self.units), "w": sorted(self.words), "ok": self.complete, "s": self.source},
                          sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Changes | None:
        if not text:
            return None
        try:
            d = json.loads(text)
            return cls({k: dict(v) for k, v in d.get("c", {}).items()},
                       {k: str(v) for k, v in d.get("p", {}).items()}, frozenset(d.get("u", [])),
                       frozenset(d.get("w", [])), bool(d.get("ok", True)), str(d.get("s", "declared")))
        except (ValueError, TypeError, AttributeError):
            return None


def declared(items: Sequence[Any], train_py: str) -> Changes:
    """The changes an idea declares (Idea.changes: objects or dicts with constant/value or part/technique),
    resolved against the train.py it was proposed on. SyntaxError for a value that is not a Python expression."""
    values: dict[str, str] = {}
    parts: dict[str, str] = {}
    for item in items:
        data = item if isinstance(item, dict) else item.model_dump()
        if data.get("constant"):
            values[str(data["constant"]).strip()] = str(data.get("value", "")).strip()
        elif data.get("part"):
            parts[str(data["part"]).strip()] = " ".join(str(data.get("technique", "")).split())
    model = trainpy.read(train_py)
    current = {name: c.spellings for name, c in model.constants.items()}
    constants = {}
    for name, per in evaluate(values, train_py).items() if values else ():
        changed = {p: v for p, v in per.items() if current.get(name, {}).get(p) != v}
        if changed:
            constants[name] = changed
    return Changes(constants, parts)


def from_fingerprint(fp: ChangeFingerprint, declared_: Changes | None = None) -> Changes:
    """What an edit really did (the authority on constants and units), with the technique names its idea gave."""
    constants = {name: {p: new for p, (old, new) in per.items() if old != new and new is not None}
                 for name, per in fp.constants.items()}
    parts = dict(declared_.parts) if declared_ is not None else {}
    return Changes({k: v for k, v in constants.items() if v}, parts, frozenset(fp.units), source="fingerprint")


# ---------------------------------------------------------------------------------------------- comparing


def values_equal(a: str, b: str) -> bool:
    """Canonical values, numbers compared to rounding ('0.03' and '0.030000000000000002')."""
    if a == b:
        return True
    x, y = _numbers(a), _numbers(b)
    return x is not None and y is not None and len(x) == len(y) and \
        all(math.isclose(i, j, rel_tol=1e-9, abs_tol=1e-12) for i, j in zip(x, y, strict=True))


def _numbers(text: str) -> tuple[float, ...] | None:
    """'0.03' -> (0.03,); '(0.9, 0.95)' -> (0.9, 0.95); None for anything else (no parser: threads share this)."""
    items = text[1:-1].split(",") if text.startswith("(") and text.endswith(")") else [text]
    try:
        return tuple(float(item) for item in items if item.strip())
    except ValueError:
        return None


def _same_part(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _covers(have: Iterable[str], need: Iterable[str]) -> bool:
    have = list(have)
    return all(any(word_match(h, n) for h in have) for n in need)


def word_match(a: str, b: str) -> bool:
    """The same word, or one a longer form of the other ('embedding' / 'embeddings', 'norm' / 'normalizing')."""
    short, long = sorted((a, b), key=len)
    return short == long or (len(short) >= 4 and long.startswith(short))


def same(new: Changes, old: Changes, profile: str) -> tuple[bool | None, str]:
    """Is `new` the experiment `old` was, as measured on `profile`? None: the structure cannot tell (admit)."""
    ours, theirs = new.on(profile), old.on(profile)
    if new.parts:
        if not old.parts:
            if old.units and any(_same_part(p, u) for p in new.parts for u in old.units):
                return None, "the other changed the same code without naming its technique"
            return False, "it rewrites code the other left alone"
        if not _constants_equal(ours, theirs):
            return False, "other constants or values"
        pairs = [(p, q) for p in new.parts for q in old.parts if _same_part(p, q)]
        if len({p for p, _ in pairs}) < len(new.parts) or len({q for _, q in pairs}) < len(old.parts):
            return False, f"other parts ({', '.join(sorted(new.parts))} vs {', '.join(sorted(old.parts))})"
        for p, q in pairs:
            ours_, theirs_ = content_words(new.parts[p]), content_words(old.parts[q])
            if not (ours_ and theirs_ and _covers(ours_, theirs_) and _covers(theirs_, ours_)):
                return False if ours_ and theirs_ else None, f"{p}: {new.parts[p] or '?'} vs {old.parts[q] or '?'}"
        return True, "same change: " + new.describe(profile)
    if new.words and not new.constants:
        named = frozenset().union(*(content_words(t) for t in old.parts.values())) if old.parts else frozenset()
        if named and not old.constants and _covers(new.words, named) and _covers(named, new.words):
            return True, "the same technique: " + old.describe(profile)
        return None, "a change in words the structure cannot compare"
    if (not new.complete or not old.complete) and not (new.source == old.source == "reading" and new.words
                                                        and _covers(new.words, old.words)
                                                        and _covers(old.words, new.words)):
        return None, "a change the reading did not fully understand"
    if old.parts or old.units:
        return False, "the other changed code too"
    if not ours:
        return None, "no constant changes on this device profile"
    if not _constants_equal(ours, theirs):
        if set(ours) != set(theirs):
            return False, f"changes other constants ({', '.join(sorted(ours))} vs {', '.join(sorted(theirs))})"
        name = next(n for n in sorted(ours) if not values_equal(ours[n], theirs[n]))
        return False, f"{name}: {ours[name]} vs {theirs[name]}"
    return True, "same change: " + new.describe(profile)


def _constants_equal(a: dict[str, str], b: dict[str, str]) -> bool:
    return set(a) == set(b) and all(values_equal(a[n], b[n]) for n in a)


def mismatch(declared_: Changes, fp: ChangeFingerprint, profile: str) -> list[str]:
    """Where an edit (its fingerprint) departs from what its idea declared, one finding each, e.g. "the idea sets
    MLP_RATIO = 3; the edit leaves MLP_RATIO unchanged" or "the idea does not change DEPTH; the edit sets it to 10".
    Constants a technique adds or removes are its own; existing ones it moves are findings."""
    done = from_fingerprint(fp)
    want, got = declared_.on(profile), done.on(profile)
    findings = []
    for name, value in sorted(want.items()):
        if name not in got:
            findings.append(f"the idea sets {name} = {value}; the edit leaves {name} unchanged")
        elif not values_equal(value, got[name]):
            findings.append(f"the idea sets {name} = {value}; the edit sets it to {got[name]}")
    for name in sorted(set(got) - set(want)):
        old, new = fp.constants[name].get(profile, [None, None])
        if old is not None and new is not None or not declared_.parts:
            findings.append(f"the idea does not change {name}; the edit sets it to {got[name]}")
    for part in sorted(declared_.parts):
        if not any(_same_part(part, unit) for unit in done.units):
            findings.append(f"the idea rewrites {part}; the edit leaves it unchanged")
    if not declared_.parts and done.units:
        findings.append("the idea only sets constants; the edit also changes the code of "
                        + ", ".join(sorted(done.units)))
    return findings
