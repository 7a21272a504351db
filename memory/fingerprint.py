"""A change fingerprint: what an edit of train.py does, described canonically from the code itself.

Both versions come from the one model of train.py (`agents.trainpy.read`: parsed once per version, constants
evaluated per device profile, code units with normalised digests), so `MATRIX_LR = 0.6 * 1.5` and
`MATRIX_LR = 0.9` are the same value, and `X = A if CUDA else B` has one value per device profile. The
fingerprint lists each constant whose value changed (old -> new, per profile) and each function, method or
class whose normalised code changed (comments, docstrings and formatting do not count). Two edits with the
same fingerprint are the same experiment, whatever their titles say.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from agents import trainpy
from agents.trainpy import DEFAULT_PROFILE, MAX_PROFILE_FLAGS, canonical_value, profile_names

__all__ = [
    "DEFAULT_PROFILE", "MAX_PROFILE_FLAGS", "ChangeFingerprint", "ModuleConstants", "canonical_value", "fingerprint",
    "fingerprint_or_none", "module_constants", "profile_names",
]


@dataclass
class ModuleConstants:
    """Module-level constants of a source file, evaluated once per device profile (the shape readers that parse
    train.py themselves still use; `agents.trainpy.read(text).constants` has the same and more, parsed once)."""

    profiles: list[str]
    values: dict[str, dict[str, str]]  # name -> profile -> canonical value (or the normalised expression)
    numbers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> profile -> evaluated value
    lines: dict[str, int] = field(default_factory=dict)  # name -> line of its assignment
    flags: list[str] = field(default_factory=list)

    def value(self, name: str, profile: str) -> Any:
        return self.numbers.get(name, {}).get(profile)


def module_constants(tree: ast.Module) -> ModuleConstants:
    """The constants of a tree parsed elsewhere, in the `ModuleConstants` shape."""
    flags, profiles, constants = trainpy.constants_of(tree)
    return ModuleConstants(
        profiles=[p.name for p in profiles], values={n: dict(c.spellings) for n, c in constants.items()},
        numbers={n: dict(c.values) for n, c in constants.items() if c.values},
        lines={n: c.line for n, c in constants.items()}, flags=list(flags))


# ---------------------------------------------------------------------------------------------- the print


@dataclass(frozen=True)
class ChangeFingerprint:
    """Constants old -> new per profile, and code units changed / added / removed, in canonical order."""

    constants: dict[str, dict[str, list[str | None]]]  # name -> profile -> [old, new] (None: absent)
    units: dict[str, list[str | None]]  # unit -> [old digest, new digest] (None: absent)

    @property
    def empty(self) -> bool:
        return not self.constants and not self.units

    def to_json(self) -> str:
        return json.dumps({"constants": self.constants, "units": self.units}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ChangeFingerprint | None:
        """The fingerprint stored with an experiment; None for an empty or unreadable field."""
        if not text:
            return None
        try:
            data = json.loads(text)
            return cls(dict(data.get("constants", {})), dict(data.get("units", {})))
        except (ValueError, AttributeError, TypeError):
            return None

    @property
    def key(self) -> str:
        """Equal for the same change, whatever its formatting, comments or the idea's title."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:32]

    def changed_constants(self, existing_only: bool = False) -> dict[str, dict[str, str]]:
        """name -> profile -> new value, for profiles where the value changed (`existing_only`: not added ones)."""
        out: dict[str, dict[str, str]] = {}
        for name, per_profile in self.constants.items():
            if existing_only and all(old is None for old, _ in per_profile.values()):
                continue
            changed = {p: new for p, (old, new) in per_profile.items() if old != new and new is not None}
            if changed:
                out[name] = changed
        return out

    def describe(self) -> str:
        """One line, e.g. `MATRIX_LR 0.04 -> 0.03 (CUDA), 0.05 -> 0.04 (not CUDA); code: MLP.forward changed`."""
        parts = []
        for name, per_profile in sorted(self.constants.items()):
            pairs = {(old, new) for old, new in per_profile.values()}
            if len(pairs) == 1:
                old, new = next(iter(pairs))
                parts.append(f"{name} {_shown(old)} -> {_shown(new)}")
            else:
                parts.append(f"{name} " + ", ".join(
                    f"{_shown(old)} -> {_shown(new)} ({profile})"
                    for profile, (old, new) in per_profile.items() if old != new))
        if self.units:
            how = {(True, False): "added", (False, True): "removed"}
            parts.append("code: " + ", ".join(
                f"{unit} {how.get((old is None, new is None), 'changed')}"
                for unit, (old, new) in sorted(self.units.items())))
        return "; ".join(parts) if parts else "no change to the code"


def _shown(value: str | None) -> str:
    return "(absent)" if value is None else value


def fingerprint(old_text: str, new_text: str) -> ChangeFingerprint:
    """The canonical change from `old_text` to `new_text`. SyntaxError if either does not parse."""
    old, new = trainpy.read(old_text), trainpy.read(new_text)
    profiles = list(dict.fromkeys(p.name for p in (*old.profiles, *new.profiles)))
    constants: dict[str, dict[str, list[str | None]]] = {}
    for name in sorted(set(old.constants) | set(new.constants)):
        before, after = _spellings(old, name), _spellings(new, name)
        if before == after:
            continue
        constants[name] = {p: [_for_profile(before, p), _for_profile(after, p)] for p in profiles}
    units: dict[str, list[str | None]] = {}
    for name in sorted(set(old.units) | set(new.units)):
        old_digest = old.units[name].digest if name in old.units else None
        new_digest = new.units[name].digest if name in new.units else None
        if old_digest != new_digest:
            units[name] = [old_digest, new_digest]
    return ChangeFingerprint(constants, units)


def _spellings(model: trainpy.TrainPy, name: str) -> dict[str, str] | None:
    constant = model.constants.get(name)
    return dict(constant.spellings) if constant is not None else None


def _for_profile(values: dict[str, str] | None, profile: str) -> str | None:
    if values is None:
        return None
    if profile in values:
        return values[profile]
    distinct = set(values.values())  # a file without profile flags has one value for every profile
    return next(iter(distinct)) if len(distinct) == 1 else None


def fingerprint_or_none(old_text: str, new_text: str) -> ChangeFingerprint | None:
    """`fingerprint`, or None when either text does not parse (the normalised diff hash still applies)."""
    try:
        return fingerprint(old_text, new_text)
    except (SyntaxError, ValueError, RecursionError):
        return None
