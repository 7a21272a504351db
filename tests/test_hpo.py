"""The hyperparameter sampler (agents/crew/hpo.py): its space, its trials as ideas and edits, what each outcome tells
the study, a study continued by another process, whose turn it is, and the missing-extra message."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from optuna.trial import TrialState

from agents.crew import hpo
from agents.crew.edits import apply_edit, check_compiles
from agents.crew.hpo import Sampler, SamplerUnavailable, told_value, trial_ref
from agents.crew.sampler_space import SamplerSpace
from agents.crew.searchspace import read_train_py
from agents.record.results import ExperimentRecord
from tests.toyrepo import ROOT

TRAIN_PY = (ROOT / "train.py").read_text()


def record(exp_id: str, status: str, title: str, bpb: float | None = None, reason: str = "",
           tag: str = "t1") -> ExperimentRecord:
    return ExperimentRecord(exp_id=exp_id, tag=tag, status=status, description=title, val_bpb=bpb,
                            decision_reason=reason)


def baseline(bpb: float = 1.0) -> ExperimentRecord:
    return record("0000", "baseline", "baseline (seed 42)", bpb)


def proposed(sampler: Sampler) -> list:
    """The trials that became ideas (not the anchors, not the draws train.py would refuse)."""
    return [t for _, t in sampler.trials() if "title" in t.user_attrs]


def states(sampler: Sampler) -> list[str]:
    return [t.state.name for t in proposed(sampler)]


# ---------------------------------------------------------------------------------------------- the space


def test_every_constant_the_policy_tunes_is_an_axis_boxed_around_its_value():
    space = SamplerSpace.around(read_train_py(TRAIN_PY, "cpu"))
    axes = {d.name: d for d in space.dimensions}
    assert {"MATRIX_LR", "DEPTH", "TOTAL_BATCH_SIZE", "ADAM_BETAS[1]", "WARMDOWN_RATIO"} <= set(axes)
    assert not any("SEED" in name or "TIME" in name or "EVAL" in name for name in axes)
    for d in space.dimensions:
        assert d.low <= 0 <= d.high and d.low < d.high
        assert d.value(0) == d.origin  # the origin is train.py as it is
    lr = axes["MATRIX_LR"]  # a learning rate on a log scale: the near box is a factor of 4 either way
    assert (lr.value(lr.low), lr.value(lr.high)) == (pytest.approx(0.0125), pytest.approx(0.2))
    assert lr.value(4) == pytest.approx(0.1)  # 4 quarter-octaves = a factor of 2
    assert axes["DEPTH"].integer and axes["TOTAL_BATCH_SIZE"].value(1) == 2 * 4096
    beta = axes["ADAM_BETAS[1]"]  # betas move 1 - beta on a log scale and stay below 1
    assert beta.value(beta.high) < 1 and beta.value(-4) == pytest.approx(0.9)
    assert axes["WARMUP_RATIO"].low == 0  # at 0 now: the box holds 0 although the policy's bounds start at 0.05
    wide = {d.name: d for d in SamplerSpace.around(read_train_py(TRAIN_PY, "cpu"), "wide").dimensions}
    assert wide["MATRIX_LR"].high > lr.high
    # a point and the values written for it are one and the same
    point = {"MATRIX_LR": 2.5, "DEPTH": 1.0, "WARMDOWN_RATIO": -3.0}
    assert space.point(space.values(point))["MATRIX_LR"] == pytest.approx(2.5, abs=0.02)
    assert space.point(space.values(point))["DEPTH"] == 1
    assert SamplerSpace.from_json(space.to_json()) == space


# ---------------------------------------------------------------------------------------------- trials


def test_a_trial_is_an_idea_naming_its_constants_and_the_coder_writes_them(tmp_path):
    sampler = Sampler("tpe", run_dir=tmp_path, tag="t1")
    idea = sampler.propose(TRAIN_PY, [], "cpu")
    method, phase, number = trial_ref(idea.title)
    assert (method, phase) == ("tpe", 0) and idea.title.startswith(f"tpe trial {number}: ")
    # random draws often break TOTAL_BATCH_SIZE % (DEVICE_BATCH_SIZE * MAX_SEQ_LEN): failed at once, drawn again
    assert all(t.state == TrialState.FAIL and t.user_attrs["not_run"] for _, t in sampler.trials()[:number])
    assert sampler.owns(idea) and not sampler.owns("MATRIX_LR 0.05 -> 0.04") and not Sampler("cmaes").owns(idea)
    edit = sampler.code(idea, TRAIN_PY)
    new = apply_edit(TRAIN_PY, edit)
    check_compiles(new)
    written = read_train_py(new, "cpu")
    for change in idea.title.split(": ", 1)[1].split(", "):  # "NAME old -> new" for every constant it changes
        name, old, _, value = change.split(" ")
        assert repr(written.knobs[name].value) == value or str(written.knobs[name].value) == value, change
    assert written.accepts({})  # train.py's divisibility checks hold
    # another process of the same run codes the same trial again (a resumed idea), from the study alone
    again = Sampler("tpe", run_dir=tmp_path, tag="t1").code(idea, TRAIN_PY)
    assert apply_edit(TRAIN_PY, again) == new


def test_draws_train_py_would_refuse_never_become_ideas(monkeypatch):
    sampler = Sampler("tpe", tag="t1")
    space = read_train_py(TRAIN_PY, "cpu")
    refused = iter([False, False, True])
    monkeypatch.setattr(type(space), "accepts", lambda self, values: next(refused))
    idea = sampler.propose(TRAIN_PY, [], "cpu")
    assert trial_ref(idea.title)[2] == 2  # trials 0 and 1 were refused by train.py's checks
    trials = [t for _, t in sampler.trials()]
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.FAIL, TrialState.RUNNING]
    assert trials[0].user_attrs["not_run"] == "train.py's divisibility checks refuse it"


@pytest.mark.parametrize(("status", "bpb", "reason", "told"), [
    ("keep", 0.97, "keep: better by more than the threshold", 0.97),
    ("discard", 1.02, "discard: not better; mean of 2 runs", 1.02),
    ("crash", None, "crash: the run produced no val_bpb", None),
    ("veto", None, "guard: only-train-py", None),
    ("repeat", None, "the same change as 0003", None),
    ("skipped", None, "no edit that applies and compiles", None),
    ("discard", 0.5, "budget stretch on the confirming run too: ...; not kept", None),
    ("discard", 0.4, "not confirmed after re-runs: implausible: below the floor", None),
    ("discard", math.nan, "", None),
])
def test_what_each_outcome_tells_the_study(tmp_path, status, bpb, reason, told):
    assert told_value(record("0001", status, "x", bpb, reason)) == told
    sampler = Sampler("tpe", tag="t1")
    idea = sampler.propose(TRAIN_PY, [], "cpu")
    sampler.observe(record("0001", status, idea.title, bpb, reason))
    sampler.observe(record("0001", "keep", idea.title, 0.5, "keep"))  # a second record of it changes nothing
    sampler.observe(record("0009", "keep", idea.title, 0.5, "keep", tag="another-run"))
    trial, = proposed(sampler)
    assert trial.state == (TrialState.FAIL if told is None else TrialState.COMPLETE)
    assert trial.value == told


def test_a_study_continues_in_the_next_process_without_losing_or_doubling_a_trial(tmp_path):
    first = Sampler("tpe", run_dir=tmp_path, tag="t1")
    ideas = [first.propose(TRAIN_PY, [baseline()], "cpu") for _ in range(4)]
    first.observe(record("0001", "discard", ideas[0].title, 1.01, "discard: not better"))
    # the process dies: idea 1 was decided (in results, never told), idea 2 is in the journal, idea 3 never got there
    results = [record("0001", "discard", ideas[0].title, 1.01, "discard: not better"),
               record("0002", "keep", ideas[1].title, 0.98, "keep: better")]
    second = Sampler("tpe", run_dir=tmp_path, tag="t1")
    second.reconcile(results, in_flight={ideas[2].title})
    assert states(second) == ["COMPLETE", "COMPLETE", "RUNNING", "FAIL"]
    assert [t.value for t in proposed(second)][:2] == [1.01, 0.98]
    second.observe(record("0003", "crash", ideas[2].title))
    nxt = second.propose(TRAIN_PY, [baseline()], "cpu")
    assert trial_ref(nxt.title)[2] > trial_ref(ideas[3].title)[2]  # numbering goes on in the same study
    assert len({t.user_attrs["title"] for t in proposed(second)}) == len(proposed(second)) == 5  # none twice
    assert nxt.title.split(": ", 1)[1] not in {i.title.split(": ", 1)[1] for i in ideas}  # fresh draws, not a replay
    with pytest.raises(hpo.SamplerError, match="tpe study, but the configuration asks for cmaes"):
        Sampler("cmaes", run_dir=tmp_path, tag="t1")


def test_the_study_is_anchored_at_the_baselines_and_restarts_around_a_keep_of_the_crew():
    sampler = Sampler("cmaes", tag="t1")
    history = [baseline(1.0), record("0001", "baseline", "baseline (seed 43)", 1.02)]
    first = sampler.propose(TRAIN_PY, history, "cpu")
    anchors = [t for _, t in sampler.trials() if "anchor" in t.user_attrs]
    assert [(a.value, a.user_attrs["anchor"]) for a in anchors] == [(pytest.approx(1.01), "baselines")]
    assert all(v == 0 for v in anchors[0].params.values())  # the anchor is train.py as it is: the origin
    # a keep of the sampler's own stays in its study
    kept = history + [record("0002", "keep", first.title, 0.99, "keep")]
    assert trial_ref(sampler.propose(TRAIN_PY, kept, "cpu").title)[1] == 0
    # a keep of the crew's moved the best: a new study around it, anchored at its value
    moved = TRAIN_PY.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    crew_keep = kept + [record("0004", "keep", "MLP_RATIO 4 -> 3", 0.95, "keep")]
    idea = sampler.propose(moved, crew_keep, "cpu")
    assert idea.title.startswith("cmaes trial 1.1: ")  # phase 1; its trial 0 is the anchor
    phase1 = [t for p, t in sampler.trials() if p == 1]
    assert phase1[0].user_attrs["anchor"] == "0004" and phase1[0].value == 0.95
    assert trial_ref(sampler.propose(moved, crew_keep, "cpu").title)[1] == 1  # the same keep starts no third
    assert "MLP_RATIO 3 ->" in idea.title or "MLP_RATIO" not in idea.title  # its values are read from the new best


def test_turns_alternate_as_configured_and_survive_a_restart():
    sampler = Sampler("tpe", turns=(1, 3), tag="t1")
    sides = [sampler.next_side([]) for _ in range(8)]
    assert sides == ["crew", "sampler", "sampler", "sampler"] * 2
    # a resumed run counts its own records (not other runs', not baselines) and keeps the rhythm
    history = [baseline(), record("0001", "discard", "EMBEDDING_LR 0.6 -> 0.42"),
               record("0002", "keep", "tpe trial 0: DEPTH 2 -> 3"), record("0003", "veto", "tpe trial 1: DEPTH 2 -> 4"),
               record("x/0001", "keep", "MATRIX_LR 0.05 -> 0.04", tag="earlier")]
    resumed = Sampler("tpe", turns=(1, 3), tag="t1")
    assert [resumed.next_side(history) for _ in range(5)] == ["sampler", "crew", "sampler", "sampler", "sampler"]
    said: list[str] = []
    tired = Sampler("tpe", turns=(2, 1), tag="t1", announce=said.append)
    tired.crew_exhausted("every move of the offline policy has been tried")
    assert {tired.next_side([]) for _ in range(4)} == {"sampler"} and len(said) == 1
    assert {Sampler("tpe", turns=(0, 1)).next_side([]) for _ in range(3)} == {"sampler"}


def test_a_missing_extra_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    from agents.assemble import SetupError, build_settings
    from agents.compare import Budget, CompareError, plan_compare
    from tests.toyrepo import make_toy_repo

    monkeypatch.setattr(hpo, "installed", lambda name: name != "cmaes")
    with pytest.raises(SamplerUnavailable) as info:
        Sampler("cmaes")
    assert str(info.value) == ("the cmaes sampler needs cmaes, which is not installed: "
                               "pip install 'autoresearch-crew[hpo]'")
    hpo.require("tpe")  # TPE needs only Optuna
    config = make_toy_repo(tmp_path / "repo", preset="cmaes")
    with pytest.raises(SetupError, match=r"needs cmaes, which is not installed: pip install 'autoresearch-crew\[hpo\]'"):
        build_settings(tmp_path / "repo", config, "t1")
    with pytest.raises(CompareError, match="configuration 'cmaes': the cmaes sampler needs cmaes"):
        plan_compare(tmp_path / "repo", ["cmaes"], Budget(experiments=1))


def test_the_cli_says_so_and_exits_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from agents.cli import app
    from tests.toyrepo import make_toy_repo

    make_toy_repo(tmp_path / "repo")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setattr(hpo, "installed", lambda name: False)
    for args in (["run", "--preset", "tpe", "--experiments", "1"], ["compare", "tpe", "offline", "--experiments", "1"]):
        result = CliRunner().invoke(app, args)
        flat = " ".join(result.output.split())
        assert result.exit_code == 2, result.output
        assert flat.count("error:") == 1 and "pip install 'autoresearch-crew[hpo]'" in flat, result.output
        assert "Traceback" not in result.output


def test_compare_rows_carry_gain_per_experiment_hour_and_usd_with_their_spread(tmp_path):
    from datetime import UTC, datetime, timedelta

    from rich.console import Console

    from agents.record.compare_report import RunData, compare_markdown, config_rows, efficiency_table

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def run(repeat: int, best: float, usd: float) -> RunData:
        def at(seconds: float) -> str:
            return (t0 + timedelta(seconds=seconds)).isoformat()
        records = [ExperimentRecord("0000", "t", "baseline", "b", val_bpb=1.0, finished_at=at(0)),
                   ExperimentRecord("0001", "t", "keep", "k", val_bpb=best, usd=usd, finished_at=at(1800)),
                   ExperimentRecord("0002", "t", "discard", "d", val_bpb=1.1, finished_at=at(3600))]
        return RunData(f"c-r{repeat}", "c", repeat, tmp_path, "done", records=records,
                       sessions=[(t0, t0 + timedelta(hours=1))])

    row, = config_rows([run(1, 0.9, 2.0), run(2, 0.8, 0.0)])
    assert row["gain"] == pytest.approx(-0.15)
    assert row["gain_per_experiment"] == pytest.approx(-0.075) and row["gain_per_experiment_sd"] > 0
    assert row["gain_per_hour"] == pytest.approx(-0.15)
    assert row["gain_per_usd"] == pytest.approx(-0.05) and row["gain_per_usd_sd"] is None  # one run spent money
    manifest = {"start_commit": "0" * 40, "arguments": {"budget": {"experiments": 2}, "repeats": 2}}
    markdown = compare_markdown("x", manifest, [], [row], {})
    assert "gain per experiment | gain per hour | gain per USD" in markdown
    assert "-7.50e-02 ±" in markdown and "-5.00e-02 |" in markdown
    console = Console(width=80, record=True)
    console.print(efficiency_table([row]))
    shown = console.export_text()
    assert "-7.50e-02 ±3.5e-02" in shown and "-1.50e-01 ±7.1e-02" in shown and "-5.00e-02" in shown


def test_presets_name_their_samplers():
    from agents.config import load_config, preset_path

    tpe, cmaes, centaur = (load_config(preset_path(name)) for name in ("tpe", "cmaes", "centaur"))
    assert (tpe.sampler.method, tpe.sampler.turns.crew) == ("tpe", 0)
    assert {tpe.role(r).model for r in ("hypothesis", "coder", "reviewer", "analyst")} == {"offline"}
    assert (cmaes.sampler.method, cmaes.sampler.turns.crew) == ("cmaes", 0)
    assert (centaur.sampler.method, centaur.sampler.turns.crew, centaur.sampler.turns.sampler) == ("cmaes", 1, 3)
    assert centaur.role("hypothesis").model == "auto"
    assert load_config(preset_path("offline")).sampler is None
    assert Path(preset_path("centaur")).read_text().count("arXiv 2603.24647") == 1
