"""From an idea to a reviewed edit of train.py, before any GPU time is spent.

propose → novelty gate (the idea's declared changes; memory.gate) → code (bounded retries fed the error)
→ fingerprint (the authority: a change that already ran is refused; so is one that changes nothing on this
device's profile, agents/bench/noop.py; an edit that departs from the idea's
declared changes goes back to the coder once with the mismatch named, then to the reviewer as a finding)
→ guard (deterministic rules) → reviewer (bounded revise rounds) → claim (the fingerprint is held until the
candidate's record is in, so two preparing threads never train one change twice). Each refusal becomes an
experiment record of its own (status `repeat`, `skipped` or `veto`, with the rule that refused it in `rule`) so
the morning report shows it too.

This runs in the crew's preparing threads (supply.py) and writes nothing (the claim on a fingerprint is held in
the memory's process, not written; adding the candidate's record releases it): one preparation is one candidate and
comes back as a `Prepared` (a candidate, a refusal naming the role whose reason it is, a proposal that failed,
an idea a stop cut short, or a failure of the preparation itself), which the coordinator records in its own
thread. What the threads read is immutable (the best's text, the ideas in flight) or thread-safe (the crew,
memory, `Feedback`, the run's `RunContext`); see docs/ARCHITECTURE.md, "What the preparing threads share".

The guard owns the scope of an edit: an edit addressed to any file but train.py is vetoed by its
`only-train-py` rule at once, not retried and not explained to the coder (coaching would only teach it to
move the same change into train.py). Feedback that goes back into a prompt never quotes a provider's error:
a failed call reads "the provider failed: <class>" (`RoleError`'s text).
"""

from __future__ import annotations

import json
import threading
import time
import traceback
from collections import deque
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol

from agents.bench.guard import GuardReport, check_edit
from agents.bench.noop import RULE as NOOP_RULE
from agents.bench.noop import noop_reason
from agents.crew.edits import EditError, apply_edit, check_compiles, diff_stats, unified_diff
from agents.crew.policy import SearchExhausted
from agents.crew.roles import ResearchCrew, RoleError
from agents.crew.schemas import CodeEdit, Idea, Review
from agents.ports import Memory
from agents.record.results import ExperimentRecord, Status
from agents.stop import StopRequested
from agents.trainpy import EDITABLE_FILE
from memory.changes import declared, mismatch, profile_of
from memory.fingerprint import fingerprint_or_none
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


class RunContext(Protocol):
    """What preparing a candidate reads from the run; the coordinator provides it, every method thread-safe."""

    def new_exp_id(self) -> str: ...

    def history(self) -> list[ExperimentRecord]: ...  # recorded, earlier runs' and in flight

    def best_summary(self) -> str: ...

    def usage_scope(self, exp_id: str) -> AbstractContextManager: ...  # tags LLM calls with their experiment


class Feedback:
    """Why the last proposals were refused: added by the coordinator, read by every preparing thread."""

    def __init__(self, keep: int = 20) -> None:
        self._lines: deque[str] = deque(maxlen=keep)
        self._lock = threading.Lock()

    def add(self, line: str) -> None:
        with self._lock:
            self._lines.append(line)

    def recent(self, n: int) -> list[str]:
        with self._lock:
            return list(self._lines)[-n:]

    def clear(self) -> None:
        with self._lock:
            self._lines.clear()


@dataclass(frozen=True)
class Workbench:
    """What preparing a candidate needs, fixed for the run (built in the coordinator's thread)."""

    crew: ResearchCrew
    memory: Memory
    run: RunContext
    program: str
    device: str
    novelty_threshold: float
    coder_retries: int
    review_rounds: int
    guard_rules: set[str] | None
    judge: object | None = None  # the memory's repeat judge (an LLM call), or None: the structure decides
    feedback: Feedback = field(default_factory=Feedback)


# whose reason a refusal is, and why in words: what the stall guard counts and says
HYPOTHESIS_REPEATS = ("hypothesis", "its ideas repeat past experiments")
HYPOTHESIS_NOOPS = ("hypothesis", "its ideas change nothing on this device's profile")
CODER_FAILS = ("coder", "its edits do not apply or compile")
CODER_OUT_OF_SCOPE = ("coder", "its edits change files other than train.py")
CODER_REPEATS = ("coder", "its edits repeat a change already tried")
CODER_VETOED = ("coder", "its edits break guard rules")
REVIEWER_VETOES = ("reviewer", "it vetoes the candidates")


@dataclass(frozen=True)
class Refusal:
    """A candidate refused before any GPU time: its record, and the role whose reason it is."""

    record: ExperimentRecord
    role: str
    why: str  # in general ("its edits do not apply or compile"); the record's decision_reason says this time's

    @property
    def feedback(self) -> str:
        r = self.record
        return f"{r.exp_id} '{r.description}' was refused ({r.status}): {r.decision_reason}"


@dataclass
class Prepared:
    """What one preparation came to (exactly one of the cases below, else nothing: the id is free again)."""

    exp_id: str = ""  # "" when it failed before reserving one
    base_commit: str = ""
    idea: Idea | None = None  # proposed (alone: a stop cut the preparation short; the journal keeps it)
    candidate: Candidate | None = None  # reviewed: ready to commit and train
    refusal: Refusal | None = None
    role_errors: list[RoleError] = field(default_factory=list)  # calls that failed on the way
    stopped: str = ""  # why it stopped early: Ctrl-C, or a call the budget refused
    exhausted: str = ""  # the offline policy has nothing new left to propose
    error: str = ""  # the preparation itself failed ("SystemError: ..."): this candidate's failure, not the run's
    trace: str = ""
    seconds: float = 0.0
    serial: int = 0  # the supply's start order (supply.py)

    def failure_record(self, tag: str, config_name: str) -> ExperimentRecord:
        """The record of a preparation that failed in the harness: named, counted and shown like a refusal."""
        idea = self.idea
        return ExperimentRecord(exp_id=self.exp_id, tag=tag, config=config_name, status=Status.ERROR,
                                description=idea.title if idea else "(no idea yet)",
                                category=idea.category if idea else "", rationale=idea.rationale if idea else "",
                                parent_commit=self.base_commit, rule="preparation",
                                decision_reason=f"preparing this candidate failed: {self.error}",
                                lesson="not the crew's refusal: the harness failed while preparing it")


def prepare_candidate(bench: Workbench, tag: str, config_name: str, base_commit: str, base_text: str) -> Prepared:
    """One proposal taken through the gates against `base_text`; never raises (a failure is the outcome's)."""
    prepared = Prepared(base_commit=base_commit)
    started = time.monotonic()
    with _outcome_of(prepared):
        prepared.exp_id = bench.run.new_exp_id()
        with bench.run.usage_scope(prepared.exp_id):
            idea = _propose(bench, base_text, prepared)
            if idea is not None:
                prepared.idea = idea
                _gate(bench, prepared, tag, config_name, base_text)
    prepared.seconds = time.monotonic() - started
    return prepared


def gate_idea(bench: Workbench, exp_id: str, idea: Idea, base_commit: str, base_text: str, tag: str,
              config_name: str) -> Prepared:
    """An idea proposed before (a candidate whose edit conflicts with a new best, or an idea a stop cut short)
    taken through the gate again on `base_text`: experiments finished since are in memory now."""
    prepared = Prepared(exp_id=exp_id, base_commit=base_commit, idea=idea)
    started = time.monotonic()
    with _outcome_of(prepared), bench.run.usage_scope(exp_id):
        _gate(bench, prepared, tag, config_name, base_text)
    prepared.seconds = time.monotonic() - started
    return prepared


class _outcome_of:  # noqa: N801  (a context manager used like a function)
    """Whatever ends a preparation early becomes its outcome: a stop, the policy's exhaustion, a failure."""

    def __init__(self, prepared: Prepared):
        self.prepared = prepared

    def __enter__(self) -> Prepared:
        return self.prepared

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, StopRequested):
            self.prepared.stopped = str(exc) or "the run is stopping"
        elif isinstance(exc, SearchExhausted):
            self.prepared.exhausted = str(exc)
        elif isinstance(exc, Exception):
            self.prepared.error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            self.prepared.trace = "".join(traceback.format_exception(exc))
        else:
            return False  # KeyboardInterrupt and the like are not a candidate's
        self.prepared.candidate = self.prepared.refusal = None
        return True


def _gate(bench: Workbench, prepared: Prepared, tag: str, config_name: str, base_text: str) -> None:
    """Memory's verdict on the idea against `base_text`, then (if it is new) the edit and the review."""
    idea = prepared.idea
    assert idea is not None
    record = ExperimentRecord(exp_id=prepared.exp_id, tag=tag, config=config_name, status=Status.REPEAT,
                              description=idea.title, category=idea.category, rationale=idea.rationale,
                              expected_effect=idea.expected_effect, parent_commit=prepared.base_commit,
                              changes=changes_json(idea))
    verdict = bench.memory.check_idea(idea, threshold=bench.novelty_threshold, train_py=base_text,
                                      judge=bench.judge, device=bench.device)
    if not verdict.novel:
        record.repeat_of = verdict.match.id if verdict.match is not None else ""
        _refused(prepared, record, Status.REPEAT, verdict.message, HYPOTHESIS_REPEATS, rule=f"novelty-{verdict.kind}")
        return
    _code_and_review(bench, prepared, base_text, record, context=verdict.context)


def _propose(bench: Workbench, base_text: str, prepared: Prepared) -> Idea | None:
    feedback = bench.feedback.recent(3)
    inputs = {
        "program": bench.program,
        "train_py": base_text,
        "best": bench.run.best_summary(),
        "recall": bench.memory.recall(feedback[-1] if feedback else "", token_budget=1500),
        "feedback": "\n".join(feedback),
        "history": bench.run.history(),
        "device": bench.device,
    }
    try:
        return bench.crew.propose(inputs)
    except RoleError as exc:
        prepared.role_errors.append(exc)
        if exc.stop_reason:
            prepared.stopped = exc.stop_reason
        return None


def _code_and_review(bench: Workbench, prepared: Prepared, base_text: str, record: ExperimentRecord,
                     context: str = "") -> None:
    idea = prepared.idea
    assert idea is not None
    feedback = context  # similar past experiments the gate found (not repeats): what the coder should know
    for _ in range(max(1, bench.review_rounds)):
        coded = _code(bench, idea, base_text, feedback, prepared)
        if prepared.stopped:  # the budget refused a call: the idea is kept for a later run, not refused
            return
        if isinstance(coded, GuardReport):
            record.guard_violations = coded.text()
            _refused(prepared, record, Status.VETO, coded.text(), CODER_OUT_OF_SCOPE, rule=_rules(coded))
            return
        if isinstance(coded, str):
            _refused(prepared, record, Status.SKIPPED, f"no edit that applies and compiles: {coded}", CODER_FAILS)
            return
        edit, new_text = coded
        if _ran_before(bench, prepared, base_text, new_text, record) or _nothing_here(bench, prepared, base_text,
                                                                                     new_text, record):
            return
        findings = _findings(bench, idea, base_text, new_text)
        if findings:  # back to the coder once, with the mismatch named
            again = _code(bench, idea, base_text, "\n".join(x for x in (feedback, _mismatch_feedback(findings)) if x),
                          prepared)
            if prepared.stopped:
                return
            if isinstance(again, tuple):
                edit, new_text = again
                if _ran_before(bench, prepared, base_text, new_text, record) or _nothing_here(
                        bench, prepared, base_text, new_text, record):
                    return
                findings = _findings(bench, idea, base_text, new_text)
        candidate = Candidate(prepared.exp_id, idea, edit, prepared.base_commit, base_text, new_text,
                              findings=findings)

        report = check_edit(base_text, new_text, [edit.path], rules=bench.guard_rules)
        candidate.guard_text = report.text() + "".join(f"\nfinding (idea vs edit): {f}" for f in findings)
        if not report.ok:
            record.guard_violations = candidate.guard_text
            _refused(prepared, record, Status.VETO, candidate.guard_text, CODER_VETOED, rule=_rules(report))
            return

        review = _review(bench, candidate, prepared)
        candidate.review = review
        if review is None or review.verdict == "approve":
            held = bench.memory.claim(f"{record.tag}/{record.exp_id}", base_text, new_text, idea.title)
            if not held.novel:  # another preparing thread holds the same change
                record.repeat_of = held.match.id if held.match is not None else ""
                _refused(prepared, record, Status.REPEAT, held.message, CODER_REPEATS, rule=f"novelty-{held.kind}")
                return
            prepared.candidate = candidate
            return
        record.review_verdict, record.review_reasons = review.verdict, json.dumps(review.reasons)
        if review.verdict == "reject":
            _refused(prepared, record, Status.VETO, "reviewer rejected: " + "; ".join(review.reasons),
                     REVIEWER_VETOES, rule="reviewer")
            return
        feedback = "\n".join(x for x in (context, "The reviewer asked for a revision: " + "; ".join(review.reasons))
                             if x)
    _refused(prepared, record, Status.VETO, "still not approved after the allowed revise rounds: " + feedback,
             REVIEWER_VETOES, rule="reviewer-revise-rounds")


def _ran_before(bench: Workbench, prepared: Prepared, base_text: str, new_text: str, record: ExperimentRecord) -> bool:
    """The fingerprint's verdict on a coded edit; a change that already ran (or another candidate holds) is
    refused as a repeat, citing it."""
    fp = fingerprint_or_none(base_text, new_text)
    record.diff, record.diff_hash = unified_diff(base_text, new_text), normalised_diff_hash(base_text, new_text)
    record.fingerprint = fp.to_json() if fp is not None else ""
    record.lines_added, record.lines_removed = diff_stats(base_text, new_text)
    retry_of = prepared.idea.retry_of if prepared.idea is not None else None
    verdict = bench.memory.check_change(base_text, new_text, retry_of=retry_of,
                                        claimant=f"{record.tag}/{record.exp_id}")
    if verdict.novel:
        return False
    record.repeat_of = verdict.match.id if verdict.match is not None else ""
    _refused(prepared, record, Status.REPEAT, verdict.message, CODER_REPEATS, rule=f"novelty-{verdict.kind}")
    return True


def _nothing_here(bench: Workbench, prepared: Prepared, base_text: str, new_text: str,
                  record: ExperimentRecord) -> bool:
    """An edit that changes nothing on this device's profile is refused: it would measure the unchanged model,
    nothing to learn and noise to keep."""
    reason = noop_reason(base_text, new_text, bench.device)
    if reason is None:
        return False
    _refused(prepared, record, Status.SKIPPED, reason, HYPOTHESIS_NOOPS, rule=NOOP_RULE)
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


def _code(bench: Workbench, idea: Idea, base_text: str, feedback: str,
          prepared: Prepared) -> tuple[CodeEdit, str] | GuardReport | str:
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
            prepared.role_errors.append(exc)
            if exc.stop_reason:  # the budget, or a role with no model left under on_model_failure: stop
                prepared.stopped = exc.stop_reason
                return str(exc)
            error = f"Your previous edit failed: {exc}"
        except EditError as exc:
            error = f"Your previous edit failed: {exc}"
    return error


def _review(bench: Workbench, candidate: Candidate, prepared: Prepared) -> Review | None:
    similar = "\n".join(f"- {h.exp_id} [{h.status}] {h.title}" for h in bench.memory.similar(candidate.idea.title, k=5))
    inputs = {"program": bench.program, "idea": candidate.idea, "diff": candidate.diff,
              "guard_report": candidate.guard_text, "guard_ok": True, "similar": similar,
              "findings": list(candidate.findings)}
    try:
        return bench.crew.review(inputs)
    except RoleError as exc:
        prepared.role_errors.append(exc)
        # a reviewer that cannot answer is not a veto: the deterministic guard already passed
        return Review(verdict="approve", reasons=[f"reviewer unavailable ({exc}); guard passed"])


def _refused(prepared: Prepared, record: ExperimentRecord, status: Status, reason: str, whose: tuple[str, str],
             rule: str = "") -> None:
    record.status = status
    record.rule = rule
    record.decision_reason = reason
    record.lesson = reason
    prepared.refusal = Refusal(record, *whose)
