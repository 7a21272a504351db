"""A classical hyperparameter sampler (Optuna's TPE or CMA-ES) playing the hypothesis and coder roles.

Each proposal is one trial: `ask` gives a value for every tunable constant of train.py at once (sampler_space.py),
the idea's title names the trial and the constants it changes (`tpe trial 7: MATRIX_LR 0.05 -> 0.0371, ...`), and
the coder writes those values into train.py deterministically. Everything after that is the same as for any idea:
novelty gate, guard, reviewer, training, the noise-aware keep rule, the budget.

What the study is told, once per experiment, when its record is written (`observe`, fed by the run's book):
  keep, discard     the val_bpb the decision was made on (the mean when it was re-run): a completed trial.
  crash             a failed trial (TrialState.FAIL): no value exists.
  veto, repeat,     failed as well: nothing was trained, so there is no value to tell; CMA-ES draws again in the
  skipped           same generation and TPE leaves failed trials out of its model.
  budget stretch,   failed: a run that trained past its budget, or a result the plausibility rule never believed,
  implausible       must not steer the search (the loop did not believe it either).
Draws that train.py would refuse (its divisibility checks) or that equal train.py as it is are failed at once and
drawn again; they never become experiments.

The study lives in `runs/<tag>/sampler.journal` (Optuna's JournalStorage), so a resumed run continues it: on opening,
trials whose experiment was decided while nobody listened are told from results.parquet, trials still in the
journal of experiments are left running (the loop resumes them), and trials asked but never written ahead are
failed. Each trial is told once; none is lost.

Anchor: the study's first finished trial is train.py as it was (the origin of every axis) at the baselines' mean.
Until a study has a finished trial Optuna's samplers draw at random in the box: TPE does so for its first
`startup_trials` (10) anyway; CMA-ES only knows its search space from finished trials, so the few trials prepared
while the baselines run are random draws, and it samples around train.py's values from then on.

Phases: when a keep that is not the sampler's own moves the best (a structural change by the crew, in the hybrid
preset), the next trial starts a new study around the new best, anchored at its value, so the sampler's steps search
around it. A pure sampler run has one study.

Turns: with `turns: {crew: c, sampler: s}` the hypothesis role proposes c ideas, then the sampler s trials, and
again; counted from the run's own records, so a resumed run keeps the rhythm. When the crew's policy has nothing
left to propose, the sampler takes every turn (announced).
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import statistics
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.crew.sampler_space import SamplerSpace
from agents.crew.schemas import CodeEdit, EditBlock, Idea
from agents.crew.searchspace import PolicyError, read_train_py
from agents.record.results import ExperimentRecord
from agents.trainpy import EDITABLE_FILE

if TYPE_CHECKING:
    import optuna

STUDY_FILE = "sampler.journal"
METHOD_NAMES = {"tpe": "TPE (Optuna's tree-structured Parzen estimator)", "cmaes": "CMA-ES (Optuna's CmaEsSampler)"}
MAX_DRAWS = 50  # draws in a row train.py refuses before the sampler gives up on this proposal
FINAL = ("keep", "discard", "crash", "veto", "repeat", "skipped")
UNTRUSTED = ("budget stretch", "implausible")  # decision reasons whose val_bpb must not steer the search
_TITLE = re.compile(r"^(?P<method>tpe|cmaes) trial (?:(?P<phase>\d+)\.)?(?P<number>\d+):")


class SamplerUnavailable(RuntimeError):
    """Optuna (or cmaes, for CMA-ES) is not installed; the message says how to install it."""


class SamplerError(PolicyError):
    """The sampler cannot go on with this study (a run started with another method, draws train.py refuses)."""


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(method: str) -> None:
    """Raise SamplerUnavailable (one line, with the install command) when `method` cannot run here."""
    needed = ["optuna"] + (["cmaes"] if method == "cmaes" else [])
    missing = [name for name in needed if not installed(name)]
    if missing:
        raise SamplerUnavailable(f"the {method} sampler needs {' and '.join(missing)}, which is not installed: "
                                 "pip install 'autoresearch-crew[hpo]'")


def trial_ref(title: str) -> tuple[str, int, int] | None:
    """(method, phase, trial number) of a sampler trial's title; None for any other idea."""
    m = _TITLE.match(title or "")
    return None if m is None else (m["method"], int(m["phase"] or 0), int(m["number"]))


def told_value(record: ExperimentRecord) -> float | None:
    """What a decided experiment tells its trial: the val_bpb it was judged on, or None (a failed trial)."""
    if record.status not in ("keep", "discard") or record.val_bpb is None or not math.isfinite(record.val_bpb):
        return None
    reason = (record.decision_reason or "").lower()
    return None if any(word in reason for word in UNTRUSTED) else float(record.val_bpb)


@dataclass
class _Phase:
    index: int
    study: optuna.Study
    space: SamplerSpace
    origin_exp: str  # the keep it started from ("" for the run's start)

    def distributions(self) -> dict:
        from optuna.distributions import FloatDistribution, IntDistribution

        return {d.name: IntDistribution(int(d.low), int(d.high)) if d.integer else FloatDistribution(d.low, d.high)
                for d in self.space.dimensions}


class Sampler:
    """One run's sampler: its studies, the trials asked in this process, and whose turn it is."""

    def __init__(self, method: str, *, seed: int = 42, box: str = "near", startup_trials: int | None = None,
                 turns: tuple[int, int] = (0, 1), run_dir: Path | None = None, tag: str = "", device: str = "cpu",
                 announce: Callable[[str], None] = lambda message: None):
        require(method)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial on the loop's console
        self.method, self.seed, self.box, self.startup_trials = method, int(seed), box, startup_trials
        self.crew_turns, self.sampler_turns = turns
        self.tag, self.device, self.announce = tag, device, announce
        self._lock = threading.RLock()
        self._asked: dict[str, dict[str, Any]] = {}  # title -> the constants' values of a trial asked here
        self._counts: dict[str, int] | None = None  # proposals per side, from the run's records on first use
        self._crew_done: str | None = None
        if run_dir is None:
            self._storage: Any = optuna.storages.InMemoryStorage()
        else:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            Path(run_dir).mkdir(parents=True, exist_ok=True)
            self._storage = JournalStorage(JournalFileBackend(str(Path(run_dir) / STUDY_FILE)))
        self._phases = self._load_phases()

    @property
    def name(self) -> str:
        return METHOD_NAMES[self.method]

    # ------------------------------------------------------------------ whose turn
    def next_side(self, history: Sequence[ExperimentRecord]) -> str:
        """'crew' or 'sampler' for the next proposal, and count it: the side furthest behind its share goes."""
        with self._lock:
            if self._counts is None:
                mine = [r for r in history if r.tag == self.tag and r.status != "baseline"]
                sampled = sum(trial_ref(r.description) is not None for r in mine)
                self._counts = {"crew": len(mine) - sampled, "sampler": sampled}
            if self.crew_turns == 0 or self._crew_done:
                side = "sampler"
            else:
                crew, sampler = self._counts["crew"] / self.crew_turns, self._counts["sampler"] / self.sampler_turns
                side = "crew" if crew <= sampler else "sampler"
            self._counts[side] += 1
            return side

    def crew_exhausted(self, reason: str) -> None:
        """The crew's side has nothing left to propose: the sampler takes its turns from now on."""
        with self._lock:
            if self._crew_done is None:
                self._crew_done = reason
                self.announce(f"the crew has nothing new to propose ({reason}); the {self.method} sampler takes "
                              "every turn from now on")

    # ------------------------------------------------------------------ hypothesis
    def propose(self, train_py: str, history: Sequence[ExperimentRecord] = (), device: str | None = None) -> Idea:
        """Ask the study for the next trial and phrase it as an idea; values train.py refuses are drawn again."""
        from optuna.trial import TrialState

        device = device or self.device
        self.device = device
        space_now = read_train_py(train_py, device)
        with self._lock:
            phase = self._phase_for(train_py, list(history), device)
            current = {name: knob.value for name, knob in space_now.knobs.items()}
            for _ in range(MAX_DRAWS):
                trial = phase.study.ask(phase.distributions())
                values = {name: value for name, value in phase.space.values(trial.params).items() if name in current}
                changed = {name: v for name, v in values.items() if _fmt(v) != _fmt(current[name])}
                if not changed or not space_now.accepts(values):
                    trial.set_user_attr("not_run", "equals train.py as it is" if not changed else
                                        "train.py's divisibility checks refuse it")
                    phase.study.tell(trial, state=TrialState.FAIL)
                    continue
                ref = f"{phase.index}.{trial.number}" if phase.index else str(trial.number)
                title = f"{self.method} trial {ref}: " + ", ".join(
                    f"{name} {_fmt(current[name])} -> {_fmt(v)}" for name, v in changed.items())
                trial.set_user_attr("title", title)
                trial.set_user_attr("values", json.dumps(values))
                self._asked[title] = values
                finished = sum(t.state == TrialState.COMPLETE for t in phase.study.get_trials(deepcopy=False))
                return Idea(title=title, category="other", rationale=(
                    f"{self.name} proposes all {len(phase.space.dimensions)} tunable constants of train.py at once, "
                    f"from the {finished} finished trial(s) of its study (phase {phase.index}, a {self.box} box "
                    f"around the values the study started from); this trial changes {len(changed)} of them."),
                    expected_effect="val_bpb below the best by more than the noise if this configuration is better; "
                                    "either way the study learns from the result.")
        raise SamplerError(f"{MAX_DRAWS} draws in a row were refused by train.py's divisibility checks or equal to "
                           f"it; the {self.method} study cannot propose a runnable configuration")

    # ------------------------------------------------------------------ coder
    def owns(self, idea: Idea | dict | str) -> bool:
        """Whether an idea is one of this sampler's trials (the coder writes it deterministically)."""
        title = idea if isinstance(idea, str) else idea.get("title", "") if isinstance(idea, dict) else idea.title
        ref = trial_ref(title)
        return ref is not None and ref[0] == self.method

    def code(self, idea: Idea, train_py: str) -> CodeEdit:
        """The trial's constants written into `train_py` (which may have moved on since the trial was asked)."""
        values = self._asked.get(idea.title) or self._stored_values(idea.title)
        if values is None:
            raise PolicyError(f"{idea.title!r} is not a trial of this run's {self.method} study")
        space = read_train_py(train_py, self.device)
        changed = {n: v for n, v in values.items() if n in space.knobs and _fmt(space.knobs[n].value) != _fmt(v)}
        if not changed:
            raise PolicyError("train.py already holds every constant of this trial")
        return CodeEdit(path=EDITABLE_FILE, blocks=[_block(train_py, space.with_knobs(changed))], summary=idea.title)

    def answer(self, role: str, inputs: dict[str, Any]) -> Idea | CodeEdit:
        """The role's output from its inputs, for the CrewAI LLM that plays the sampler (llm/offline.py)."""
        if role == "hypothesis":
            return self.propose(inputs["train_py"], inputs.get("history") or [], inputs.get("device"))
        if role == "coder":
            idea = inputs["idea"]
            return self.code(idea if isinstance(idea, Idea) else Idea.model_validate(idea), inputs["train_py"])
        raise PolicyError(f"the {self.method} sampler plays the hypothesis and coder roles, not {role!r}")

    # ------------------------------------------------------------------ results
    def observe(self, record: ExperimentRecord) -> None:
        """Tell the trial behind a decided experiment its outcome (once; later calls for it change nothing)."""
        ref = trial_ref(record.description)
        if ref is None or ref[0] != self.method or record.status not in FINAL or (self.tag and record.tag != self.tag):
            return
        from optuna.trial import TrialState

        with self._lock:
            phase = self._phases[ref[1]] if ref[1] < len(self._phases) else None
            if phase is None:
                return
            trials = phase.study.get_trials(deepcopy=False)
            if ref[2] >= len(trials) or trials[ref[2]].state != TrialState.RUNNING:
                return
            value = told_value(record)
            if value is None:
                phase.study.tell(ref[2], state=TrialState.FAIL, skip_if_finished=True)
            else:
                phase.study.tell(ref[2], value, skip_if_finished=True)

    def reconcile(self, records: Sequence[ExperimentRecord], in_flight: set[str]) -> None:
        """On opening a resumed run: tell what was decided meanwhile; fail trials asked but never written ahead."""
        from optuna.trial import TrialState

        for record in records:
            self.observe(record)
        with self._lock:
            for phase in self._phases:
                for trial in phase.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                    if trial.user_attrs.get("title") not in in_flight:
                        phase.study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)

    def trials(self) -> list[tuple[int, optuna.trial.FrozenTrial]]:
        """(phase, trial) for every trial of every study of this run, in order."""
        return [(p.index, t) for p in self._phases for t in p.study.get_trials(deepcopy=False)]

    # ------------------------------------------------------------------ studies
    def _load_phases(self) -> list[_Phase]:
        import optuna

        phases = []
        for name in sorted(optuna.get_all_study_names(self._storage), key=lambda n: int(n.rsplit("-", 1)[-1])):
            study = optuna.load_study(study_name=name, storage=self._storage)
            attrs = study.user_attrs
            if attrs.get("method") != self.method:
                raise SamplerError(f"this run's study is a {attrs.get('method')} study, but the configuration asks for "
                                   f"{self.method}; resume it with the same sampler, or start another --tag")
            phases.append(_Phase(len(phases), study, SamplerSpace.from_json(attrs["space"]), attrs.get("origin", "")))
        if phases:  # only the newest study draws trials: give it its sampler, seeded past what it has drawn
            phases[-1].study = optuna.load_study(study_name=phases[-1].study.study_name, storage=self._storage,
                                                 sampler=self._make_sampler(phases[-1]))
        return phases

    def _phase_for(self, train_py: str, history: list[ExperimentRecord], device: str) -> _Phase:
        """The study the next trial belongs to: a new one around the best when a keep not of this sampler moved it."""
        mine = [r for r in history if not self.tag or r.tag == self.tag]
        keeps = [r for r in mine if r.status == "keep"]
        last = keeps[-1] if keeps else None
        if not self._phases:
            self._start_phase(train_py, device, last.exp_id if last else "")
        elif last is not None and trial_ref(last.description) is None and last.exp_id != self._phases[-1].origin_exp:
            self._start_phase(train_py, device, last.exp_id)
            self.announce(f"the best moved by {last.exp_id} ({last.description}); the {self.method} sampler starts a "
                          f"new study around it (phase {len(self._phases) - 1})")
        phase = self._phases[-1]
        self._anchor(phase, mine)
        return phase

    def _start_phase(self, train_py: str, device: str, origin_exp: str) -> None:
        import optuna

        index = len(self._phases)
        space = SamplerSpace.around(read_train_py(train_py, device), self.box)
        if not space.dimensions:
            raise SamplerError("train.py has no constant the sampler can tune")
        study = optuna.create_study(study_name=f"phase-{index}", storage=self._storage, direction="minimize")
        for key, value in (("method", self.method), ("space", space.to_json()), ("origin", origin_exp),
                           ("box", self.box)):
            study.set_user_attr(key, value)
        phase = _Phase(index, study, space, origin_exp)
        phase.study = optuna.load_study(study_name=study.study_name, storage=self._storage,
                                        sampler=self._make_sampler(phase))
        self._phases.append(phase)

    def _anchor(self, phase: _Phase, history: list[ExperimentRecord]) -> None:
        """The study's origin as a finished trial once its val_bpb is known (the baselines, or the keep it
        started from), so the sampler models its first draws around what already ran."""
        if phase.study.user_attrs.get("anchored"):
            return
        if phase.origin_exp:
            values = [r.val_bpb for r in history if r.exp_id == phase.origin_exp and r.val_bpb is not None]
        else:
            values = [r.val_bpb for r in history if r.status == "baseline" and r.val_bpb is not None]
        if not values:
            return
        import optuna

        params = {d.name: (0 if d.integer else 0.0) for d in phase.space.dimensions}
        phase.study.add_trial(optuna.trial.create_trial(
            params=params, distributions=phase.distributions(), value=statistics.fmean(values),
            user_attrs={"anchor": phase.origin_exp or "baselines"}))
        phase.study.set_user_attr("anchored", True)

    def _make_sampler(self, phase: _Phase) -> optuna.samplers.BaseSampler:
        import optuna

        drawn = len(phase.study.get_trials(deepcopy=False))
        seed = (self.seed * 1_000_003 + phase.index * 7_919 + drawn) % 2**31  # a resumed run draws afresh
        if self.method == "tpe":
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=10 if self.startup_trials is None
                                              else self.startup_trials)
        with warnings.catch_warnings():  # x0 is deprecated in Optuna 4.9 (removal planned for 6), hence optuna<6
            warnings.simplefilter("ignore", FutureWarning)
            return optuna.samplers.CmaEsSampler(
                x0={d.name: (0 if d.integer else 0.0) for d in phase.space.dimensions}, seed=seed,
                n_startup_trials=self.startup_trials or 0, warn_independent_sampling=False)

    def _stored_values(self, title: str) -> dict[str, Any] | None:
        """The constants of a trial asked by an earlier process of this run (its idea was resumed)."""
        ref = trial_ref(title)
        with self._lock:
            if ref is None or ref[1] >= len(self._phases):
                return None
            trials = self._phases[ref[1]].study.get_trials(deepcopy=False)
            if ref[2] >= len(trials) or trials[ref[2]].user_attrs.get("title") != title:
                return None
            return json.loads(trials[ref[2]].user_attrs["values"])


def _fmt(value: float | int) -> str:
    """A value as titles and train.py show it: ints plain, floats by repr."""
    return str(value) if isinstance(value, int) else repr(float(value))


def _block(old: str, new: str) -> EditBlock:
    """One search/replace block from the first changed line to the last (the constants sit together at the top)."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    if len(a) != len(b):
        return EditBlock(search=old, replace=new)
    changed = [i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y]
    first, last = changed[0], changed[-1] + 1
    while old.count("".join(a[first:last])) != 1 and (first > 0 or last < len(a)):
        first, last = max(first - 1, 0), min(last + 1, len(a))
    return EditBlock(search="".join(a[first:last]), replace="".join(b[first:last]))
