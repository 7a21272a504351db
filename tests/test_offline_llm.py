"""OfflineLLM inside real one-task CrewAI crews: each role's schema comes back as the task's pydantic output."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from agents.crewai_env import quiet_crewai

quiet_crewai()
# CrewAI records each kickoff in a SQLite file; keep it out of the home directory
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-test-"))

from crewai import Agent, Crew, Process, Task  # noqa: E402

from agents.config import load_config, preset_path  # noqa: E402
from agents.crew.edits import apply_edit, unified_diff  # noqa: E402
from agents.crew.llm.offline import OfflineLLM  # noqa: E402
from agents.crew.llm.usage import UsageLedger  # noqa: E402
from agents.crew.policy import OfflinePolicy, PolicyError  # noqa: E402
from agents.crew.roles import ResearchCrew, build_llms  # noqa: E402
from agents.crew.schemas import Analysis, CodeEdit, Idea, Review  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402

TRAIN_PY = (Path(__file__).resolve().parents[1] / "train.py").read_text()


def kickoff(llm: OfflineLLM, schema, role: str | None = None, inputs: dict | None = None):
    """One agent, one task with output_pydantic=schema, one sequential crew: as roles.py runs a role."""
    if role is not None:
        llm.set_context(role, inputs or {})
    agent = Agent(role="Researcher", goal="Do the task.", backstory="Careful.", llm=llm, tools=[],
                  allow_delegation=False, verbose=False, max_retry_limit=0, respect_context_window=False)
    task = Task(description=f"Answer with a {schema.__name__}.", expected_output=schema.__name__,
                output_pydantic=schema, agent=agent)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False).kickoff()


def test_the_four_roles_through_real_crews():
    policy = OfflinePolicy(seed=3)
    llms = {role: OfflineLLM(policy) for role in ("hypothesis", "coder", "reviewer", "analyst")}
    assert all(llm.model == "offline" for llm in llms.values())

    result = kickoff(llms["hypothesis"], Idea, "hypothesis", {"program": "p", "train_py": TRAIN_PY, "best": "",
                                                              "recall": "", "feedback": "", "history": [],
                                                              "device": "cpu"})
    idea = result.pydantic
    assert isinstance(idea, Idea) and idea.title
    assert result.token_usage.total_tokens == 0

    edit = kickoff(llms["coder"], CodeEdit, "coder", {"program": "p", "idea": idea, "train_py": TRAIN_PY,
                                                      "feedback": ""}).pydantic
    assert isinstance(edit, CodeEdit) and edit.path == "train.py"
    new = apply_edit(TRAIN_PY, edit)
    compile(new, "train.py", "exec")

    review = kickoff(llms["reviewer"], Review, "reviewer", {"program": "p", "idea": idea,
                                                            "diff": unified_diff(TRAIN_PY, new),
                                                            "guard_report": "", "guard_ok": True,
                                                            "similar": ""}).pydantic
    assert isinstance(review, Review) and review.verdict == "approve"

    record = ExperimentRecord(exp_id="0001", tag="t", status="discard", description=idea.title, val_bpb=1.01,
                              best_bpb_before=1.0, delta=0.01)
    analysis = kickoff(llms["analyst"], Analysis, "analyst", {"program": "p", "idea": idea, "record": record,
                                                              "log_tail": "", "history": [record]}).pydantic
    assert isinstance(analysis, Analysis) and idea.title in analysis.explanation and analysis.lesson


def test_the_offline_preset_crew_plays_every_role():
    """roles.py as the loop uses it: templates filled, set_context called, one crew per task."""
    config = load_config(preset_path("offline"))
    policy = OfflinePolicy(seed=config.loop.seed)
    ledger = UsageLedger()
    llms = build_llms(config, ledger, lambda role: OfflineLLM(policy), env={})
    crew = ResearchCrew(config, "program", ledger, llms)
    idea = crew.propose({"train_py": TRAIN_PY, "best": "", "recall": "", "feedback": "", "history": [],
                         "device": "cpu"})
    new = apply_edit(TRAIN_PY, crew.code({"idea": idea, "train_py": TRAIN_PY, "feedback": ""}))
    review = crew.review({"idea": idea, "diff": unified_diff(TRAIN_PY, new), "guard_report": "", "guard_ok": True,
                          "similar": ""})
    record = ExperimentRecord(exp_id="0001", tag="t", status="keep", description=idea.title, val_bpb=0.99,
                              best_bpb_before=1.0, delta=-0.01)
    analysis = crew.analyse({"idea": idea, "record": record, "log_tail": "", "history": [record]})
    assert review.verdict == "approve" and "improved val_bpb by 0.0100" in analysis.lesson
    assert ledger.totals().usd == 0 and ledger.totals().input_tokens == 0


def test_one_context_gives_one_answer_however_often_crewai_asks():
    policy = OfflinePolicy(seed=3)
    llm = OfflineLLM(policy)
    llm.set_context("hypothesis", {"train_py": TRAIN_PY, "history": [], "device": "cpu", "feedback": ""})
    first, again = llm.call("propose"), llm.call([{"role": "user", "content": "propose"}], response_model=Idea)
    assert Idea.model_validate_json(first) == again  # the policy proposed once, not twice
    llm.set_context("hypothesis", {"train_py": TRAIN_PY, "history": [], "device": "cpu", "feedback": ""})
    assert llm.call("propose", response_model=Idea).title != again.title


def test_called_without_context_the_crew_fails_with_a_clear_message():
    with pytest.raises(PolicyError, match="before set_context"):
        OfflineLLM(OfflinePolicy()).call("propose", response_model=Idea)
    with pytest.raises(Exception, match="before set_context"):
        kickoff(OfflineLLM(OfflinePolicy()), Idea)


def test_an_unknown_role_is_refused():
    with pytest.raises(PolicyError, match="unknown role"):
        OfflineLLM().set_context("manager", {})
