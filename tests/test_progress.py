"""The stall guard and the cap on candidates per trained experiment, counted in candidates."""

from __future__ import annotations

from agents.crew.candidates import CODER_FAILS, HYPOTHESIS_REPEATS, Refusal
from agents.crew.progress import Progress
from agents.record.results import ExperimentRecord


def refusal(role_why: tuple[str, str], reason: str = "block 1: search text is empty") -> Refusal:
    record = ExperimentRecord(exp_id="0001", tag="t", status="skipped", description="x", decision_reason=reason)
    return Refusal(record, *role_why)


def test_the_same_roles_reason_stalls_after_max_stalled_candidates():
    progress = Progress(max_stalled=3, max_candidates=20)
    assert progress.refused(refusal(CODER_FAILS), serial=1) is None
    assert progress.refused(refusal(HYPOTHESIS_REPEATS), serial=2) is None  # another role's streak
    assert progress.refused(refusal(CODER_FAILS), serial=3) is None
    stall = progress.refused(refusal(CODER_FAILS), serial=4)
    assert stall is not None and stall.role == "coder" and stall.count == 3
    assert stall.line() == ("coder: 3 candidates in a row never reached training: its edits do not apply or compile "
                            "(last: block 1: search text is empty)")
    assert progress.refused(refusal(CODER_FAILS), serial=5) is None  # the streak starts again


def test_a_candidate_that_reaches_training_ends_every_streak():
    progress = Progress(max_stalled=2, max_candidates=20)
    progress.refused(refusal(CODER_FAILS), serial=1)
    progress.reached_training()
    assert progress.refused(refusal(CODER_FAILS), serial=2) is None


def test_candidates_prepared_by_a_role_given_up_do_not_count_against_its_successor():
    progress = Progress(max_stalled=2, max_candidates=20)
    progress.refused(refusal(CODER_FAILS), serial=1)
    assert progress.refused(refusal(CODER_FAILS), serial=2) is not None
    progress.replaced("coder", started=6)  # four more were in preparation with the old coder
    for serial in (3, 4, 5, 6):
        assert progress.refused(refusal(CODER_FAILS), serial=serial) is None
    assert progress.refused(refusal(CODER_FAILS), serial=7) is None
    assert progress.refused(refusal(CODER_FAILS), serial=8) is not None


def test_the_cap_counts_candidates_started_since_the_last_trained_experiment():
    progress = Progress(max_stalled=5, max_candidates=4)
    assert progress.room(started=0) == 4
    assert progress.room(started=4) == 0
    progress.trained(started=4)
    assert progress.room(started=5) == 3
    progress.refused(refusal(CODER_FAILS), serial=5)
    progress.failed()
    assert progress.cap_line() == ("4 candidates in a row did not train (loop.max_candidates_per_experiment); the crew "
                                   "is not making progress: 1 coder: its edits do not apply or compile, 1 failed "
                                   "while preparing (see the 'error' rows)")
