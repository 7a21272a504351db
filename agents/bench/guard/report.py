"""The guard's rule names, one violation, and the report the reviewer and the coder read."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RULES: dict[str, str] = {
    "only-train-py": "the edit touches train.py and no other file",
    "prepare-hash": "prepare.py is byte for byte the locked file (checked by the loop before and after every run)",
    "compiles": "the new train.py parses as Python (without it the other rules cannot look)",
    "no-patching": "nothing of prepare, the clock, torch, builtins or sys is reassigned, wrapped, shadowed or deleted, "
                   "and no hook or mode is installed globally (on every module or every torch call)",
    "no-val-data": "validation data is reached only through the one evaluate_bpb call",
    "no-metric-forgery": "no environment access, budget constants untouched, the time budget measured honestly (helpers "
                         "included) with all training inside it, val_bpb printed only from evaluate_bpb",
    "no-escape": "no processes, sockets, downloads, loaded state or file writes (torch.save to a bare *.pt name excepted)",
    "allowed-imports": "imports only from the allowed standard-library subset, torch, numpy and prepare's public API",
    "seed-or-order-only": "seeds come from prepare.SEED, the edit changes more than the seed or the data order, and "
                          "training takes prepare's batches in prepare's order (none skipped, filtered or reordered)",
    "no-indirection": "no exec/eval/compile/__import__/importlib, computed getattr/setattr, globals()/vars(), __dict__",
    "causal-attention": "attention stays causal wherever it is computed (is_causal=True, or masks that hide every later "
                        "position), no shift of the sequence towards later positions inside the model, and nothing "
                        "of the targets reaches the logits",
}
ALL_RULES = frozenset(RULES)


@dataclass(frozen=True)
class Violation:
    """One broken rule: the rule's name, where (line 0: the edit as a whole) and why."""

    rule: str
    line_no: int
    line: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line_no}" if self.line_no else "edit"
        shown = f": {self.line}" if self.line else ""
        return f"[{self.rule}] {where}{shown}\n    {self.message}"


@dataclass
class GuardReport:
    violations: list[Violation] = field(default_factory=list)
    rules: frozenset[str] = ALL_RULES

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def rules_violated(self) -> set[str]:
        return {v.rule for v in self.violations}

    def text(self) -> str:
        """The report as the reviewer role and the coder read it."""
        if self.ok:
            return f"Guard: pass. All {len(self.rules)} enabled rules hold ({', '.join(sorted(self.rules))})."
        lines = [f"Guard: VETO. {len(self.violations)} violation(s) of {len(self.rules_violated)} rule(s):"]
        lines += [str(v) for v in self.violations]
        lines.append("Rules: " + "; ".join(f"{r}: {RULES[r]}" for r in sorted(self.rules_violated)))
        return "\n".join(lines)


def resolve_rules(rules: Iterable[str] | None) -> frozenset[str]:
    """The enabled rule names; crew.yaml may spell them with underscores (`no_patching`)."""
    if rules is None:
        return ALL_RULES
    chosen = set()
    for name in rules:
        canonical = name.strip().replace("_", "-")
        if canonical not in RULES:
            raise ValueError(f"unknown guard rule {name!r}; the rules are: {', '.join(RULES)}")
        chosen.add(canonical)
    return frozenset(chosen)
