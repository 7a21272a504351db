"""From an idea to a reviewed edit of train.py, before any GPU time is spent.

propose → novelty gate (the idea's declared changes; memory.gate) → code (bounded retries fed the error)
→ fingerprint (the authority: a change that already ran is refused; an edit that departs from the idea's
declared changes goes back to the coder once with the mismatch named, then to the reviewer as a finding)
→ guard (deterministic rules) → reviewer (bounded revise rounds) → claim (the fingerprint is held until the
candidate's record is in, so two preparing threads never train one change twice). Each refusal becomes an
experiment record of its own (status `repeat`, `skipped` or `veto`, with the rule that refused it in `rule`) so
the morning report shows it too.

The guard owns the scope of an edit: an edit addressed to any file but train.py is vetoed by its
`only-train-py` rule at once, not retried and not explained to the coder (coaching would only teach it to
move the same change into train.py). Feedback that goes back into a prompt never quotes a provider's error:
a failed call reads "the provider failed: <class>" (`RoleError`'s text).
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from agents.bench.guard import GuardReport, check_edit
from agents.crew.edits import EditError, apply_edit, check_compiles, diff_stats, unified_diff
from agents.crew.roles import ResearchCrew, RoleError
from agents.crew.schemas import CodeEdit, Idea, Review
from agents.record.results import ExperimentRecord
from agents.trainpy import EDITABLE_FILE
from memory.changes import declared, mismatch, profile_of
from memory.fingerprint import fingerprint_or_none
from memory.judge import judge_for_crew
from memory.novelty import normalised_diff_hash

SCOPE_RULE = "only-train-py"  # the guard's rule for edits of any other file


@dataclass
class Candidate:
    """A reviewed edit, ready to be committed and trained."""

    exp_id: str
    idea: Idea
    edit: CodeEdit
    base_commit: str
    base_text: str
    new_text: str
    review: Review | None = None
    guard_text: str = ""
    findings: list[str] = field(default_factory=list)  # where the edit departs from the idea's declared changes

    @property
    def diff(self) -> str:
        return unified_diff(self.base_text, self.new_text)

    @property
    def diff_hash(self) -> str:
        return normalised_diff_hash(self.base_text, self.new_text)

    @property
    def fingerprint(self) -> str:
        """The change canonically (constants old -> new, code units changed), as JSON; "" if it does not parse."""
        fp = fingerprint_or_none(self.base_text, self.new_text)
        return fp.to_json() if fp is not None else ""

    @property
    def lines(self) -> tuple[int, int]:
        return diff_stats(self.base_text, self.new_text)


@dataclass
class Workbench:
    """What preparing a candidate needs from the loop."""

    crew: ResearchCrew
    memory: object  # memory.store.ExperimentMemory
    program: str
    device: str
    novelty_threshold: float
    coder_retries: int
    review_rounds: int
    guard_rules: set[str] | None
    new_exp_id: Callable[[], str]
    refuse: Callable[[ExperimentRecord], None]  # records a refusal (results + memory)
    history: Callable[[], list[ExperimentRecord]]
    recall: Callable[[str], str]
    best_summary: Callable[[], str]
    usage_scope: Callable[[str], AbstractContextManager]  # tags LLM calls with the experiment they were made for
    on_role_error: Callable[[RoleError], None]
    feedback: list[str] = field(default_factory=list)


def prepare_candidate(bench: Workbench, tag: str, config_name: str, base_commit: str, base_text: str,
                      max_proposals: int = 5) -> Candidate | None:
    """Propose until an idea survives the gates, at most `max_proposals` times; None if none did."""
    exp_id = ""
    for _ in range(max_proposals):
        # a proposal that failed leaves no record: its id (and the usage and faults counted under it) carries over
        exp_id = exp_id or bench.new_exp_id()
        with bench.usage_scope(exp_id):
            idea = _propose(bench, base_text)
            if idea is None:
                continue
            candidate = _gate(bench, exp_id, idea, tag, config_name, base_commit, base_text)
        if candidate is not None:
            bench.feedback.clear()
            return candidate
        exp_id = ""
    return None


def _gate(bench: Workbench, exp_id: str, idea: Idea, tag: str, config_name: str, base_commit: str,
          base_text: str) -> Candidate | None:
    """Memory's verdict on the idea against `base_text`, then (if it is new) the edit and the review."""
    record = ExperimentRecord(exp_id=exp_id, tag=tag, config=config_name, status="repeat",
                              description=idea.title, category=idea.category, rationale=idea.rationale,
                              expected_effect=idea.expected_effect, parent_commit=base_commit,
                              changes=changes_json(idea))
    verdict = bench.memory.check_idea(idea, threshold=bench.novelty_threshold, train_py=base_text,
                                      judge=_judge(bench), device=bench.device)
    if not verdict.novel:
        record.repeat_of = verdict.match.id if verdict.match is not None else ""
        _refused(bench, record, "repeat", verdict.message, rule=f"novelty-{verdict.kind}")
        return None
    return _code_and_review(bench, exp_id, idea, base_commit, base_text, record, context=verdict.context)


_JUDGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_JUDGES_LOCK = threading.Lock()  # preparing threads ask at once: one judge per crew


def _judge(bench: Workbench) -> object | None:
    """The crew's repeat judge (an LLM call), built once per crew; None when the structure alone decides."""
    with _JUDGES_LOCK:
        if bench.crew not in _JUDGES:
            try:
                _JUDGES[bench.crew] = judge_for_crew(bench.crew)
            except Exception as exc:  # a judge that cannot be built must not stop the run: the structure decides
                logging.getLogger("memory").warning("the repeat judge is unavailable (%s); ideas are judged by "
                                                    "their structure alone", exc)
                _JUDGES[bench.crew] = None
        return _JUDGES[bench.crew]


def recode(bench: Workbench, stale: Candidate, base_commit: str, base_text: str, tag: str,
           config_name: str) -> Candidate | None:
    """Re-apply a prepared idea on a new best whose train.py conflicted with its edit.

    It goes through the gate again: it was judged before the experiments that finished since were in memory.
    """
    with bench.usage_scope(stale.exp_id):
        return _gate(bench, stale.exp_id, stale.idea, tag, config_name, base_commit, base_text)


def _propose(bench: Workbench, base_text: str) -> Idea | None:
    inputs = {
        "program": bench.program,
        "train_py": base_text,
        "best": bench.best_summary(),
        "recall": bench.recall(bench.feedback[-1] if bench.feedback else ""),
        "feedback": "\n".join(bench.feedback[-3:]),
        "history": bench.history(),
        "device": bench.device,
    }
    try:
        return bench.crew.propose(inputs)
    except RoleError as exc:
        bench.on_role_error(exc)
        bench.feedback.append(f"the last proposal failed: {exc}")
        return None


def _code_and_review(bench: Workbench, exp_id: str, idea: Idea, base_commit: str, base_text: str,
                     record: ExperimentRecord, context: str = "") -> Candidate | None:
    feedback = context  # similar past experiments the gate found (not repeats): what the coder should know
    for _ in range(max(1, bench.review_rounds)):
        coded = _code(bench, idea, base_text, feedback)
        if isinstance(coded, GuardReport):
            record.guard_violations = coded.text()
            _refused(bench, record, "veto", coded.text(), rule=_rules(coded))
            return None
        if isinstance(coded, str):
            _refused(bench, record, "skipped", f"no edit that applies and compiles: {coded}")
            return None
        edit, new_text = coded
        if _ran_before(bench, idea, base_text, new_text, record):
            return None
        findings = _findings(bench, idea, base_text, new_text)
        if findings:  # back to the coder once, with the mismatch named
            again = _code(bench, idea, base_text, "\n".join(x for x in (feedback, _mismatch_feedback(findings)) if x))
            if isinstance(again, tuple):
                edit, new_text = again
                if _ran_before(bench, idea, base_text, new_text, record):
                    return None
                findings = _findings(bench, idea, base_text, new_text)
        candidate = Candidate(exp_id, idea, edit, base_commit, base_text, new_text, findings=findings)

        report = check_edit(base_text, new_text, [edit.path], rules=bench.guard_rules)
        candidate.guard_text = report.text() + "".join(f"\nfinding (idea vs edit): {f}" for f in findings)
        if not report.ok:
            record.guard_violations = candidate.guard_text
            _refused(bench, record, "veto", candidate.guard_text, rule=_rules(report))
            return None

        review = _review(bench, candidate)
        candidate.review = review
        if review is None or review.verdict == "approve":
            held = bench.memory.claim(f"{record.tag}/{record.exp_id}", base_text, new_text, idea.title)
            if not held.novel:  # another preparing thread holds the same change
                record.repeat_of = held.match.id if held.match is not None else ""
                _refused(bench, record, "repeat", held.message, rule=f"novelty-{held.kind}")
                return None
            return candidate
        record.review_verdict, record.review_reasons = review.verdict, json.dumps(review.reasons)
        if review.verdict == "reject":
            _refused(bench, record, "veto", "reviewer rejected: " + "; ".join(review.reasons), rule="reviewer")
            return None
        feedback = "\n".join(x for x in (context, "The reviewer asked for a revision: " + "; ".join(review.reasons)) if x)
    _refused(bench, record, "veto", "still not approved after the allowed revise rounds: " + feedback,
             rule="reviewer-revise-rounds")
    return None


def _ran_before(bench: Workbench, idea: Idea, base_text: str, new_text: str, record: ExperimentRecord) -> bool:
    """The fingerprint's verdict on a coded edit; a change that already ran (or another candidate holds) is
    recorded as a refused repeat, citing it."""
    fp = fingerprint_or_none(base_text, new_text)
    record.diff, record.diff_hash = unified_diff(base_text, new_text), normalised_diff_hash(base_text, new_text)
    record.fingerprint = fp.to_json() if fp is not None else ""
    record.lines_added, record.lines_removed = diff_stats(base_text, new_text)
    verdict = bench.memory.check_change(base_text, new_text, retry_of=idea.retry_of,
                                        claimant=f"{record.tag}/{record.exp_id}")
    if verdict.novel:
        return False
    record.repeat_of = verdict.match.id if verdict.match is not None else ""
    _refused(bench, record, "repeat", verdict.message, rule=f"novelty-{verdict.kind}")
    return True


def _findings(bench: Workbench, idea: Idea, base_text: str, new_text: str) -> list[str]:
    """Where the edit's fingerprint departs from the idea's declared changes ([] for an idea without them)."""
    if not idea.changes:
        return []
    fp = fingerprint_or_none(base_text, new_text)
    try:
        wanted = declared(idea.changes, base_text)
        profile = profile_of(base_text, bench.device)
    except (SyntaxError, ValueError, RecursionError):
        return []
    return mismatch(wanted, fp, profile) if fp is not None else []


def _mismatch_feedback(findings: list[str]) -> str:
    return ("Your edit does not do what the idea declares (its fingerprint: " + "; ".join(findings)
            + "). Implement exactly the idea's changes, nothing else.")


def changes_json(idea: Idea) -> str:
    """The idea's declared changes as a record keeps them ("" when it has none)."""
    return json.dumps([c.model_dump() for c in idea.changes]) if idea.changes else ""


def _rules(report: GuardReport) -> str:
    return ", ".join(sorted(report.rules_violated))


def _code(bench: Workbench, idea: Idea, base_text: str, feedback: str) -> tuple[CodeEdit, str] | GuardReport | str:
    """The coder's edit applied and compiled; the guard's veto of an edit aimed outside train.py (final, not
    retried); or the last error after the allowed retries."""
    error = ""
    for _ in range(1 + bench.coder_retries):
        inputs = {"program": bench.program, "idea": idea, "train_py": base_text,
                  "feedback": "\n".join(x for x in (feedback, error) if x)}
        try:
            edit = bench.crew.code(inputs)
            if edit.path.strip() != EDITABLE_FILE:
                # only the scope question: train.py itself is unchanged here, which other rules would flag
                report = check_edit(base_text, base_text, [edit.path], rules=bench.guard_rules)
                scope = GuardReport([v for v in report.violations if v.rule == SCOPE_RULE], report.rules)
                if not scope.ok:
                    return scope
                # with the scope rule switched off the blocks still only ever apply to train.py
            new_text = apply_edit(base_text, edit)
            check_compiles(new_text)
            if new_text == base_text:
                raise EditError("the edit changes nothing")
            return edit, new_text
        except RoleError as exc:
            bench.on_role_error(exc)
            if exc.stop_reason:  # the budget, or a role with no model left under on_model_failure: stop
                return str(exc)
            error = f"Your previous edit failed: {exc}"
        except EditError as exc:
            error = f"Your previous edit failed: {exc}"
    return error


def _review(bench: Workbench, candidate: Candidate) -> Review | None:
    similar = "\n".join(f"- {h.exp_id} [{h.status}] {h.title}" for h in bench.memory.similar(candidate.idea.title, k=5))
    inputs = {"program": bench.program, "idea": candidate.idea, "diff": candidate.diff,
              "guard_report": candidate.guard_text, "guard_ok": True, "similar": similar,
              "findings": list(candidate.findings)}
    try:
        return bench.crew.review(inputs)
    except RoleError as exc:
        bench.on_role_error(exc)
        # a reviewer that cannot answer is not a veto: the deterministic guard already passed
        return Review(verdict="approve", reasons=[f"reviewer unavailable ({exc}); guard passed"])


def _refused(bench: Workbench, record: ExperimentRecord, status: str, reason: str, rule: str = "") -> None:
    record.status = status
    record.rule = rule
    record.decision_reason = reason
    record.lesson = reason
    bench.feedback.append(f"{record.exp_id} '{record.description}' was refused ({status}): {reason}")
    bench.refuse(record)
