"""The crew plumbing end to end: crew.yaml -> CrewAI Agent/Task/Crew -> a scripted in-process LLM -> schemas.

`ScriptedLLM` is a real CrewAI `BaseLLM` subclass that answers from a script; CrewAI itself runs unmocked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field, PrivateAttr

from agents.crewai_env import quiet_crewai

quiet_crewai()
# CrewAI records each kickoff in a SQLite file; keep it out of the home directory
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-test-"))

from crewai import BaseLLM  # noqa: E402

from agents.config import ROLE_NAMES, CrewConfig, load_config, preset_path  # noqa: E402
from agents.crew.llm.errors import BudgetExceeded  # noqa: E402
from agents.crew.roles import FALLBACK, OFFLINE, ResearchCrew, RoleError, build_llms, fill_template  # noqa: E402
from agents.crew.schemas import Analysis, CodeEdit, EditBlock, Idea, Review  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROGRAM = "PROGRAM-TEXT: lower val_bpb, only train.py changes."

IDEA = Idea(title="MATRIX_LR 0.04 -> 0.03", rationale="loss spikes early", expected_effect="lower val_bpb",
            category="learning_rate")
ANSWERS: dict[str, BaseModel] = {
    "hypothesis": IDEA,
    "coder": CodeEdit(blocks=[EditBlock(search="MATRIX_LR = 0.04", replace="MATRIX_LR = 0.03")], summary="lr"),
    "reviewer": Review(verdict="approve", reasons=["one clean change"]),
    "analyst": Analysis(explanation="fewer spikes", lesson="lower LR helps at depth 8"),
}


class ScriptedLLM(BaseLLM):
    """Answers each call with the next scripted item: a model (sent as JSON), an exception (raised) or text."""

    script: list[Any] = Field(default_factory=list)
    default: Any = None
    _calls: list[dict] = PrivateAttr(default_factory=list)

    def call(self, messages, tools=None, callbacks=None, available_functions=None, from_task=None,
             from_agent=None, response_model=None, **kwargs):
        snapshot = [dict(m) for m in messages]  # CrewAI reuses the list object between calls
        self._calls.append({"messages": snapshot, "agent": from_agent, "response_model": response_model})
        item = self.script.pop(0) if self.script else self.default
        if isinstance(item, Exception):
            raise item
        return item.model_dump_json() if isinstance(item, BaseModel) else item

    @property
    def calls(self) -> list[dict]:
        return self._calls

    def prompt(self, index: int = -1) -> str:
        return "\n".join(m["content"] for m in self._calls[index]["messages"])


class ContextLLM(ScriptedLLM):
    """Like the offline policy: wants the inputs as Python objects before each kickoff."""

    _contexts: list[tuple[str, dict]] = PrivateAttr(default_factory=list)

    def set_context(self, role: str, inputs: dict) -> None:
        self._contexts.append((role, inputs))

    @property
    def contexts(self) -> list[tuple[str, dict]]:
        return self._contexts


def _record(exp_id: str, status: str = "discard", bpb: float | None = 1.01) -> ExperimentRecord:
    return ExperimentRecord(exp_id=exp_id, tag="t", status=status, description=f"idea {exp_id}", val_bpb=bpb,
                            delta=0.002 if bpb else None, category="optimizer", lesson=f"lesson {exp_id}")


def _inputs(role: str) -> dict[str, Any]:
    history = [_record("0001", "baseline"), _record("0002")]
    return {
        "hypothesis": {"train_py": "MATRIX_LR = 0.04  # {not a placeholder}\n", "best": "best 1.000000",
                       "recall": "RECALLED-NOTE", "feedback": "", "history": history, "device": "cpu"},
        "coder": {"idea": IDEA, "train_py": "MATRIX_LR = 0.04\n", "feedback": "FEEDBACK-TEXT"},
        "reviewer": {"idea": IDEA, "diff": "-MATRIX_LR = 0.04\n+MATRIX_LR = 0.03", "guard_report": "all rules pass",
                     "guard_ok": True, "similar": "none"},
        "analyst": {"idea": IDEA, "record": _record("0003", "keep", 0.99), "log_tail": "step 45 loss 3.2",
                    "history": history},
    }[role]


def _call(crew: ResearchCrew, role: str, inputs: dict[str, Any] | None = None) -> Any:
    method = {"hypothesis": crew.propose, "coder": crew.code, "reviewer": crew.review, "analyst": crew.analyse}[role]
    return method(inputs if inputs is not None else _inputs(role))


def _crew(config: CrewConfig, llms: dict[str, BaseLLM]) -> ResearchCrew:
    return ResearchCrew(config, PROGRAM, ledger=None, llms=llms)


def _scripted_map(config: CrewConfig, primary: dict[str, ScriptedLLM], fallback: dict[str, ScriptedLLM] | None = None,
                  offline: dict[str, ScriptedLLM] | None = None) -> dict[str, BaseLLM]:
    llms: dict[str, BaseLLM] = {}
    for role in ROLE_NAMES:
        llms[role] = primary[role]
        llms[role + OFFLINE] = (offline or {}).get(role) or ScriptedLLM(model="offline", default=ANSWERS[role])
        if fallback and role in fallback:
            llms[role + FALLBACK] = fallback[role]
    return llms


# ---------------------------------------------------------------------------------------------- happy path


def test_each_role_returns_its_schema_and_gets_its_context():
    config = load_config(preset_path("offline"))
    made: dict[str, ContextLLM] = {}

    def factory(role: str) -> ContextLLM:
        made[role] = ContextLLM(model="offline", default=ANSWERS[role])
        return made[role]

    llms = build_llms(config, ledger=None, offline_llm_factory=factory, env={})
    assert all(llms[role] is made[role] is llms[role + OFFLINE] for role in ROLE_NAMES)
    crew = _crew(config, llms)
    for role in ROLE_NAMES:
        inputs = _inputs(role)
        out = _call(crew, role, inputs)
        assert out == ANSWERS[role] and type(out) is type(ANSWERS[role])
        llm = made[role]
        # the hypothesis answers in the schema made for its train.py (its constants and parts as enums)
        assert len(llm.calls) == 1 and issubclass(llm.calls[0]["response_model"], type(ANSWERS[role]))
        # set_context saw this role and the very objects the loop passed, plus the program
        (ctx_role, ctx_inputs), = llm.contexts
        assert ctx_role == role and ctx_inputs["program"] == PROGRAM
        assert all(ctx_inputs[k] is v for k, v in inputs.items())
    assert crew.degraded_roles == []


def test_task_description_is_the_template_filled_with_text_inputs():
    config = load_config(REPO / "crew.yaml")
    llms = _scripted_map(config, {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES})
    crew = _crew(config, llms)
    crew.propose(_inputs("hypothesis"))
    prompt = llms["hypothesis"].prompt()
    assert PROGRAM in prompt and "RECALLED-NOTE" in prompt and "Device: cpu" in prompt
    assert "MATRIX_LR = 0.04  # {not a placeholder}" in prompt  # braces inside inputs survive
    assert "0002 discard" in prompt and "lesson 0002" in prompt  # history rendered as text
    assert config.roles.hypothesis.role in prompt  # the agent's persona from crew.yaml
    crew.analyse(_inputs("analyst"))
    prompt = llms["analyst"].prompt()
    assert "Experiment 0003" in prompt and "val_bpb: 0.990000" in prompt and "MATRIX_LR 0.04 -> 0.03" in prompt


def test_missing_input_is_a_clear_error_not_a_role_failure():
    config = load_config(REPO / "crew.yaml")
    llms = _scripted_map(config, {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES})
    inputs = dict(_inputs("coder"))
    del inputs["idea"]
    with pytest.raises(ValueError, match="coder: inputs lack idea"):
        _crew(config, llms).code(inputs)
    assert llms["coder"].calls == []


def test_fill_template_renders_bools_and_keeps_literal_braces():
    text = fill_template("reviewer", "ok={guard_ok} {{literal}}", {"guard_ok": False})
    assert text == "ok=no {literal}"


# ---------------------------------------------------------------------------------------------- modes


def test_single_agent_mode_uses_one_agent_for_every_role():
    config = load_config(preset_path("single-agent"))
    shared = ScriptedLLM(model="scripted", script=[ANSWERS[r] for r in ROLE_NAMES] * 2)
    crew = _crew(config, _scripted_map(config, {r: shared for r in ROLE_NAMES}))
    outputs = [_call(crew, role) for _ in range(2) for role in ROLE_NAMES]
    assert outputs == [ANSWERS[r] for r in ROLE_NAMES] * 2
    agents = {id(c["agent"]) for c in shared.calls}
    assert len(shared.calls) == 8 and len(agents) == 1
    assert shared.calls[0]["agent"].role == config.single_agent.role
    # the reused agent starts each task afresh: the same role's prompt does not grow between rounds
    assert [shared.prompt(i) for i in range(4)] == [shared.prompt(i) for i in range(4, 8)]


def test_crew_mode_uses_one_agent_per_role():
    config = load_config(REPO / "crew.yaml")
    llms = _scripted_map(config, {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES})
    crew = _crew(config, llms)
    for role in ROLE_NAMES:
        _call(crew, role)
    roles = [llms[r].calls[0]["agent"].role for r in ROLE_NAMES]
    assert roles == [config.role(r).role for r in ROLE_NAMES] and len(set(roles)) == 4


def test_build_llms_shares_one_model_in_single_agent_mode():
    config = load_config(preset_path("single-agent"))
    made: list[dict] = []

    def make_llm(model: str, **options: Any) -> BaseLLM:
        made.append({"model": model, **options})
        return ScriptedLLM(model=model)

    env = {"ANTHROPIC_API_KEY": "x"}
    llms = build_llms(config, None, lambda role: ScriptedLLM(model="offline"), env=env, make_llm=make_llm)
    assert len(made) == 1 and made[0]["role"] == "single_agent"
    assert made[0]["model"].startswith("anthropic/") and made[0]["api_key_env"] == "ANTHROPIC_API_KEY"
    assert made[0]["temperature"] == config.single_agent.temperature
    assert len({id(llms[r]) for r in ROLE_NAMES}) == 1
    assert len({id(llms[r + OFFLINE]) for r in ROLE_NAMES}) == 4


def test_build_llms_passes_role_settings_and_fallback(tmp_path):
    text = (f"extends: {REPO / 'crew.yaml'}\nname: t\nroles:\n  coder:\n    model: openai/local-model\n"
            "    base_url: http://127.0.0.1:9/v1\n    fallback_model: anthropic/claude-x\n"
            "    usd_per_mtok_in: 3\n    max_retries: 1\n  reviewer:\n    enabled: false\n")
    (tmp_path / "c.yaml").write_text(text)
    config = load_config(tmp_path / "c.yaml")
    made: dict[str, dict] = {}

    def make_llm(model: str, **options: Any) -> BaseLLM:
        made[model] = options
        return ScriptedLLM(model=model)

    llms = build_llms(config, "LEDGER", lambda role: ScriptedLLM(model="offline"), env={}, make_llm=make_llm)
    assert set(made) == {"openai/local-model", "anthropic/claude-x"}  # the other roles resolve auto -> offline
    local = made["openai/local-model"]
    assert local["base_url"] == "http://127.0.0.1:9/v1" and local["api_key_env"] is None
    assert local["role"] == "coder" and local["ledger"] == "LEDGER"
    assert local["usd_per_mtok_in"] == 3 and local["max_retries"] == 1
    assert made["anthropic/claude-x"]["api_key_env"] == "ANTHROPIC_API_KEY"
    assert llms["coder" + FALLBACK].model == "anthropic/claude-x"
    assert "reviewer" not in llms and "reviewer" + OFFLINE not in llms


def test_disabled_reviewer_returns_none_without_calling_anything():
    config = load_config(preset_path("no-reviewer"))
    primary = {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES}
    crew = _crew(config, _scripted_map(config, primary))
    assert crew.review(_inputs("reviewer")) is None
    assert primary["reviewer"].calls == []


# ---------------------------------------------------------------------------------------------- failures


def test_fallback_answers_when_the_primary_fails_then_primary_is_given_up():
    config = load_config(REPO / "crew.yaml")  # degrade_after: 3
    down = RuntimeError("503 provider unavailable")
    primary = {r: ScriptedLLM(model="anthropic/primary", default=down if r == "coder" else ANSWERS[r])
               for r in ROLE_NAMES}
    backup = ScriptedLLM(model="openai/backup", default=ANSWERS["coder"])
    crew = _crew(config, _scripted_map(config, primary, fallback={"coder": backup}))

    for attempt in range(1, 4):
        assert crew.code(_inputs("coder")) == ANSWERS["coder"]
        assert len(primary["coder"].calls) == attempt and len(backup.calls) == attempt
    (line,) = crew.degraded_roles
    assert line.startswith("coder: anthropic/primary -> openai/backup") and "503 provider unavailable" in line

    crew.code(_inputs("coder"))  # the primary is not tried any more
    assert len(primary["coder"].calls) == 3 and len(backup.calls) == 4


def test_repeated_failures_raise_role_error_then_degrade_to_offline():
    config = load_config(REPO / "crew.yaml")
    primary = {r: ScriptedLLM(model="anthropic/primary", default=ANSWERS[r]) for r in ROLE_NAMES}
    primary["hypothesis"].default = "I would rather chat than answer in JSON."  # malformed, every time
    offline = {"hypothesis": ContextLLM(model="offline", default=ANSWERS["hypothesis"])}
    crew = _crew(config, _scripted_map(config, primary, offline=offline))

    for failures in range(1, config.degrade_after + 1):
        with pytest.raises(RoleError) as info:
            crew.propose(_inputs("hypothesis"))
        assert info.value.role == "hypothesis" and "anthropic/primary" in info.value.reason
        assert "\n" not in str(info.value) and "anthropic/primary" not in str(info.value)  # str() may reach prompts
        assert bool(crew.degraded_roles) == (failures == config.degrade_after)
    (line,) = crew.degraded_roles
    assert line.startswith("hypothesis: anthropic/primary -> offline policy after 3 failures in a row")

    calls_before = len(primary["hypothesis"].calls)
    assert crew.propose(_inputs("hypothesis")) == ANSWERS["hypothesis"]  # the offline policy answers now
    assert len(primary["hypothesis"].calls) == calls_before
    assert offline["hypothesis"].contexts[-1][0] == "hypothesis"
    assert crew.code(_inputs("coder")) == ANSWERS["coder"]  # other roles are unaffected


def test_a_success_resets_the_failure_count():
    config = load_config(REPO / "crew.yaml")
    flaky = ScriptedLLM(model="anthropic/flaky", default=ANSWERS["reviewer"],
                        script=[RuntimeError("500"), RuntimeError("500"), ANSWERS["reviewer"],
                                RuntimeError("500"), RuntimeError("500")])
    primary = {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES} | {"reviewer": flaky}
    crew = _crew(config, _scripted_map(config, primary))
    outcomes = []
    for _ in range(6):
        try:
            outcomes.append(crew.review(_inputs("reviewer")).verdict)
        except RoleError:
            outcomes.append("error")
    assert outcomes == ["error", "error", "approve", "error", "error", "approve"]
    assert crew.degraded_roles == []


def test_budget_refusal_is_not_a_model_failure():
    config = load_config(REPO / "crew.yaml")
    refused = BudgetExceeded("max_usd 1.00 would be exceeded")
    primary = {r: ScriptedLLM(model="anthropic/primary", default=ANSWERS[r]) for r in ROLE_NAMES}
    primary["analyst"].default = refused
    crew = _crew(config, _scripted_map(config, primary))
    for _ in range(config.degrade_after + 1):
        with pytest.raises(RoleError) as info:
            crew.analyse(_inputs("analyst"))
        assert info.value.budget_exceeded and "max_usd" in str(info.value)
    assert crew.degraded_roles == []  # the role never fell back to the offline policy for it


# ---------------------------------------------------------------------------------------------- real adapter


def test_propose_through_the_anthropic_sdk_adapter(monkeypatch):
    from agents.crew.llm import UsageLedger, make_llm
    from tests.llm_server import Reply, ScriptedLLMServer

    monkeypatch.setenv("TEST_ROLES_ANTHROPIC_KEY", "test-key")
    config = load_config(REPO / "crew.yaml")
    ledger = UsageLedger()
    with ScriptedLLMServer([Reply.json(IDEA.model_dump())], lifetime_s=60, max_requests=5) as server:
        adapter = make_llm("anthropic/claude-test", role="hypothesis", ledger=ledger,
                           base_url=server.base_url_anthropic, api_key_env="TEST_ROLES_ANTHROPIC_KEY",
                           max_retries=0, timeout_s=10)
        llms = _scripted_map(config, {r: ScriptedLLM(model="scripted", default=ANSWERS[r]) for r in ROLE_NAMES})
        llms["hypothesis"] = adapter
        idea = _crew(config, llms).propose(_inputs("hypothesis"))

    assert idea == IDEA
    (request,) = server.requests
    assert request.model == "claude-test" and request.schema_name == "Idea"
    assert config.roles.hypothesis.role in request.system  # the agent's persona
    assert PROGRAM in request.text and "RECALLED-NOTE" in request.text  # the filled task template
    assert ledger.totals(role="hypothesis").calls == 1
