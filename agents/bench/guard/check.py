"""`check_edit`: run every rule family over an edit of train.py and keep what the enabled rules report."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from agents import trainpy
from agents.bench.guard import (
    budget,
    causality,
    dataorder,
    files,
    indirection,
    metrics,
    modules,
    patching,
    seeds,
    targets,
    valdata,
)
from agents.bench.guard.program import Program
from agents.bench.guard.report import GuardReport, Violation, resolve_rules
from agents.trainpy import EDITABLE_FILE

# One module per rule family; each reads the parsed train.py and reports through Program.hit.
FAMILIES = (modules, patching, files, valdata, metrics, budget, seeds, dataorder, indirection, causality, targets)


def check_edit(old_text: str, new_text: str, changed_paths: list[str], *,
               rules: Iterable[str] | None = None) -> GuardReport:
    """Check an edit that turns `old_text` (train.py) into `new_text` and touches `changed_paths`."""
    enabled = resolve_rules(rules)
    fallbacks: dict[Violation, str] = {}
    found = [Violation("only-train-py", 0, p, f"the edit touches {p}; agents may edit only {EDITABLE_FILE}")
             for p in changed_paths if PurePosixPath(p.strip().replace("\\", "/")) != PurePosixPath(EDITABLE_FILE)]
    try:
        new = Program(trainpy.read(new_text))
    except SyntaxError as exc:
        found.append(Violation("compiles", exc.lineno or 0, (exc.text or "").strip(),
                               f"the new {EDITABLE_FILE} does not parse ({exc.msg}); no other rule could be checked"))
    else:
        for family in FAMILIES:
            family.check(new)
        found += new.found
        fallbacks = new.fallbacks
        try:
            old = Program(trainpy.read(old_text))
        except SyntaxError:
            old = None  # nothing to compare with: the rules above still looked at the new file
        if old is not None:
            found += seeds.seed_or_order_only(old_text, new_text)
            found += budget.gate_changes(old, new)
    kept: dict[tuple, Violation] = {}
    for v in found:
        rule = v.rule if v.rule in enabled else fallbacks.get(v)
        if rule in enabled:
            v = Violation(rule, v.line_no, v.line, v.message)
            kept.setdefault((v.rule, v.line_no, v.message), v)
    return GuardReport(sorted(kept.values(), key=lambda v: (v.line_no, v.rule)), enabled)
