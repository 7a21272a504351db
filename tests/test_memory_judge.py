"""The LLM repeat judge, through the real openai SDK against a scripted server on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.config import load_config
from agents.crew.llm import UsageLedger, make_llm
from agents.crew.schemas import Idea
from agents.record.results import ExperimentRecord
from memory import ExperimentMemory
from memory.embeddings import load_minilm
from memory.fingerprint import fingerprint
from memory.judge import LLMJudge, judge_for_crew
from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer

REPO = Path(__file__).resolve().parents[1]
BASE = (REPO / "train.py").read_text()


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


@pytest.fixture
def memory(tmp_path, minilm):
    with ExperimentMemory.open(tmp_path / "mem") as memory:
        memory.add(ExperimentRecord(
            exp_id="0007", tag="n1", status="discard", description="Cheaper feed-forward", rationale="Fewer FLOPs.",
            val_bpb=1.012, delta=0.004, lesson="Capacity mattered more than speed.",
            fingerprint=fingerprint(BASE, BASE.replace("MLP_RATIO = 4", "MLP_RATIO = 3")).to_json()))
        memory.add(ExperimentRecord(exp_id="0008", tag="n1", status="keep", description="DEPTH 8 -> 10",
                                    rationale="More capacity.", val_bpb=0.995, delta=-0.006))
        yield memory


def judge(server: ScriptedLLMServer, ledger: UsageLedger) -> LLMJudge:
    llm = make_llm("openai/judge-model", role="judge", ledger=ledger, base_url=server.base_url_openai,
                   timeout_s=5.0, max_retries=0, output_retries=0)
    return LLMJudge(llm, "llm openai/judge-model")


IDEA = Idea(title="A narrower MLP", rationale="Speed up each step.", expected_effect="", category="architecture")


def test_the_judge_names_the_repeat_and_the_refusal_cites_it(memory):
    seen: list[ParsedRequest] = []

    def responder(request: ParsedRequest) -> Reply:
        seen.append(request)
        return Reply.json({"same_as": "n1/0007", "reason": "the same MLP_RATIO 4 -> 3 change"})

    ledger = UsageLedger()
    with ScriptedLLMServer(responder) as server:
        verdict = memory.check_idea(IDEA, threshold=0.05, judge=judge(server, ledger))
    assert (verdict.novel, verdict.match.id, verdict.judged_by) == (False, "n1/0007", "llm openai/judge-model")
    assert "Capacity mattered more than speed" in verdict.message and "MLP_RATIO 4 -> 3" in verdict.message
    assert seen[0].schema_name == "JudgeAnswer"
    assert "what the code changed: MLP_RATIO 4 -> 3" in seen[0].text and "A narrower MLP" in seen[0].text
    assert ledger.totals(role="judge").input_tokens > 0  # metered like any role


def test_a_judge_that_names_no_repeat_admits_the_idea(memory):
    ledger = UsageLedger()
    with ScriptedLLMServer([Reply.json({"same_as": None, "reason": "another value"})]) as server:
        verdict = memory.check_idea(IDEA, threshold=0.05, judge=judge(server, ledger))
    assert verdict.novel and verdict.judged_by == "llm openai/judge-model"


@pytest.mark.parametrize("reply", [Reply.json({"same_as": "n9/9999", "reason": "made up"}), Reply.error(400, "bad")])
def test_an_unusable_judge_leaves_the_decision_to_the_structure_and_says_so(memory, reply):
    memory.add(ExperimentRecord(exp_id="0009", tag="n1", status="discard", description="SwiGLU", val_bpb=1.01,
                                changes='[{"part": "MLP.forward", "technique": "SwiGLU"}]'))
    swiglu = Idea(title="Gated MLP", rationale="", expected_effect="", category="other",
                  changes=[{"part": "MLP.forward", "technique": "swiglu"}])
    with ScriptedLLMServer([reply]) as server:
        verdict = memory.check_idea(swiglu, judge=judge(server, UsageLedger()))
    assert not verdict.novel and verdict.match.id == "n1/0009"  # the same part with the same technique
    assert "the structure decided" in verdict.message


def test_constants_are_decided_by_structure_without_asking_the_judge(memory):
    with ScriptedLLMServer([Reply.error(500, "must not be called")]) as server:
        verdict = memory.check_idea(Idea(title="x", rationale="", expected_effect="", category="other",
                                         changes=[{"constant": "MLP_RATIO", "value": "3"}]),
                                    judge=judge(server, UsageLedger()))
        assert server.requests == []
    assert not verdict.novel and verdict.match.id == "n1/0007" and verdict.judged_by == "structure"


def test_the_judge_decides_words_the_structure_cannot(memory):
    """'stop normalizing the token embeddings' after 'embedding norm: on -> off': the judge reads it."""
    memory.add(ExperimentRecord(exp_id="0010", tag="n1", status="discard", description="embedding norm: on -> off",
                                val_bpb=1.01, changes='[{"part": "GPT.forward", "technique": "embedding norm off"}]'))
    seen: list[ParsedRequest] = []

    def responder(request: ParsedRequest) -> Reply:
        seen.append(request)
        return Reply.json({"same_as": "n1/0010", "reason": "switching off the embedding norm"})

    with ScriptedLLMServer(responder) as server:
        verdict = memory.check_idea(Idea(title="stop normalizing the token embeddings", rationale="",
                                         expected_effect="", category="other"), judge=judge(server, UsageLedger()))
    assert not verdict.novel and verdict.match.id == "n1/0010"
    assert "GPT.forward: embedding norm off" in seen[0].text  # the candidate is shown with the technique it named


def test_which_judge_a_crew_gets(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    class Crew:
        def __init__(self, config):
            self.config, self.ledger = config, UsageLedger()

    offline = load_config(REPO / "crew.yaml")  # model: auto without keys -> offline
    assert judge_for_crew(Crew(offline)) is None
    (tmp_path / "crew.yaml").write_text((REPO / "crew.yaml").read_text().replace(
        "judge_model: null", "judge_model: openai/local\n  judge_base_url: http://127.0.0.1:9/v1"))
    own = judge_for_crew(Crew(load_config(tmp_path / "crew.yaml")))
    assert own is not None and own.name == "llm openai/local"
