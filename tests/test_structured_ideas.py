"""Structured ideas end to end through the real SDKs and the scripted server: the hypothesis fills `changes`
through the schema; memory refuses a re-proposal under a new title before any coding; the fingerprint catches an
edit that does not do what the idea declared (back to the coder once, then a finding for the reviewer)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from contextlib import nullcontext
from pathlib import Path

import pytest

os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-test-"))

from agents.config import load_config  # noqa: E402
from agents.crew.candidates import Candidate, Feedback, Workbench, prepare_candidate  # noqa: E402
from agents.crew.llm import UsageLedger  # noqa: E402
from agents.crew.llm.offline import OfflineLLM  # noqa: E402
from agents.crew.policy import OfflinePolicy  # noqa: E402
from agents.crew.roles import ResearchCrew, build_llms  # noqa: E402
from agents.crew.schemas import Idea  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402
from memory import ExperimentMemory  # noqa: E402
from memory.embeddings import load_minilm  # noqa: E402
from memory.fingerprint import fingerprint  # noqa: E402
from memory.judge import judge_for_crew  # noqa: E402
from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TRAIN = (REPO / "train.py").read_text()
GELU = ("F.relu(self.c_fc(x)).square()", "F.gelu(self.c_fc(x))")


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def idea(title: str, *changes: dict) -> dict:
    return {"title": title, "rationale": f"because {title}", "expected_effect": "lower val_bpb",
            "category": "architecture", "changes": list(changes)}


class Crew:
    """The scripted crew on the wire: ideas in order, the coder's edits per idea title, a reviewer that rejects an
    edit whose findings say it departs from its idea, and a judge that names the past idea with the same part."""

    def __init__(self, ideas: list[dict], edits: dict[str, list[tuple[str, str]]]):
        self.ideas, self.edits = list(ideas), {k: list(v) for k, v in edits.items()}
        self.requests: list[ParsedRequest] = []

    def __call__(self, request: ParsedRequest) -> Reply:
        self.requests.append(request)
        if request.schema_name == "Idea":
            return Reply.json(self.ideas.pop(0))
        if request.schema_name == "CodeEdit":
            title = re.search(r"Title: (.*)", request.text).group(1).strip()
            search, replace = self.edits[title].pop(0) if len(self.edits[title]) > 1 else self.edits[title][0]
            return Reply.json({"path": "train.py", "blocks": [{"search": search, "replace": replace}], "summary": title})
        if request.schema_name == "Review":
            found = re.findall(r"finding \(idea vs edit\): (.*)", request.text)
            return Reply.json({"verdict": "reject" if found else "approve", "reasons": found or ["clean"]})
        if request.schema_name == "JudgeAnswer":
            past = re.findall(r"id: (\S+)\nidea: .*\n(?:rationale: .*\n)?what the code changed: .*MLP\.forward", request.text)
            return Reply.json({"same_as": past[0] if past else None, "reason": "the same MLP activation"})
        return Reply.error(400, f"unexpected {request.schema_name}")

    def of(self, schema: str) -> list[ParsedRequest]:
        return [r for r in self.requests if r.schema_name == schema]


class Run:  # candidates.RunContext
    def __init__(self) -> None:
        self.ids = iter(f"{i:04d}" for i in range(1, 100))

    def new_exp_id(self) -> str:
        return next(self.ids)

    def history(self) -> list[ExperimentRecord]:
        return []

    def best_summary(self) -> str:
        return "no result yet"

    def usage_scope(self, exp_id: str):
        return nullcontext()


def bench(memory: ExperimentMemory, ledger: UsageLedger) -> Workbench:
    config = load_config(REPO / "crew.yaml")
    for role in ("hypothesis", "coder", "reviewer", "analyst"):
        getattr(config.roles, role).model = "anthropic/claude-test"
        getattr(config.roles, role).max_retries = 0
    policy = OfflinePolicy()
    crew = ResearchCrew(config, "Lower val_bpb.", ledger, build_llms(config, ledger, lambda r: OfflineLLM(policy)))
    return Workbench(crew=crew, memory=memory, run=Run(), program="Lower val_bpb.", device="cuda",
                     novelty_threshold=0.3, coder_retries=1, review_rounds=2, guard_rules=None,
                     judge=judge_for_crew(crew), feedback=Feedback())  # built once, as the loop builds it


def prepare_until_one(bench: Workbench, refused: list[ExperimentRecord], proposals: int) -> Candidate | None:
    """Preparations one after another, each refusal recorded as the coordinator records it (memory, feedback)."""
    for _ in range(proposals):
        prepared = prepare_candidate(bench, "night2", "full", "c0", TRAIN)
        assert not prepared.error, prepared.trace
        if prepared.candidate is not None:
            return prepared.candidate
        if prepared.refusal is not None:
            refused.append(prepared.refusal.record)
            bench.memory.add(prepared.refusal.record)
            bench.feedback.add(prepared.refusal.feedback)
    return None


def past(memory: ExperimentMemory) -> None:
    """What ran before: MLP_RATIO = 3 and GELU in the MLP, each coded (a fingerprint) with its declared changes."""
    ratio = TRAIN.replace("MLP_RATIO = 4", "MLP_RATIO = 3")
    memory.add(ExperimentRecord(exp_id="0001", tag="night1", status="discard", description="MLP_RATIO 4 -> 3",
                                val_bpb=1.01, lesson="Capacity mattered more than speed.",
                                changes=json.dumps([{"constant": "MLP_RATIO", "value": "3"}]),
                                fingerprint=fingerprint(TRAIN, ratio).to_json()))
    memory.add(ExperimentRecord(exp_id="0002", tag="night1", status="discard", description="MLP activation: GELU",
                                val_bpb=1.02, changes=json.dumps([{"part": "MLP.forward", "technique": "GELU"}]),
                                fingerprint=fingerprint(TRAIN, TRAIN.replace(*GELU)).to_json()))


def test_re_proposals_under_new_titles_are_refused_before_coding(tmp_path, minilm, anthropic_env):
    crew = Crew([idea("A leaner feed-forward block", {"constant": "MLP_RATIO", "value": "6 // 2"}),
                 idea("Smooth the MLP non-linearity", {"part": "MLP.forward", "technique": "gelu activation"}),
                 idea("Shallower", {"constant": "DEPTH", "value": "6 if CUDA else 2"})],
                {"Shallower": [("DEPTH = 8 if CUDA else 2", "DEPTH = 6 if CUDA else 2")]})
    refused: list[ExperimentRecord] = []
    with ScriptedLLMServer(crew) as server, ExperimentMemory.open(tmp_path / "mem", device="cuda") as memory:
        anthropic_env(server)
        past(memory)
        candidate = prepare_until_one(bench(memory, UsageLedger()), refused, proposals=5)
    # the schema offered train.py's constants and parts as enums
    schema = json.dumps(crew.of("Idea")[0].schema)
    assert '"MLP_RATIO"' in schema and '"MLP.forward"' in schema
    assert [(r.status, r.rule, r.repeat_of) for r in refused] == [("repeat", "novelty-semantic", "night1/0001"),
                                                                  ("repeat", "novelty-semantic", "night1/0002")]
    assert "Capacity mattered more than speed" in refused[0].decision_reason
    assert json.loads(refused[0].changes) == [{"constant": "MLP_RATIO", "value": "6 // 2"}]
    assert [re.search(r"Title: (.*)", r.text).group(1) for r in crew.of("CodeEdit")] == ["Shallower"]  # no coding
    assert len(crew.of("JudgeAnswer")) == 1  # constants were decided by structure; the part by the judge
    assert candidate is not None and candidate.idea.changes[0].constant == "DEPTH" and candidate.findings == []


def test_an_edit_that_departs_from_its_declared_changes_is_caught_by_the_fingerprint(tmp_path, minilm,
                                                                                      anthropic_env):
    wrong = ("DEPTH = 8 if CUDA else 2", "DEPTH = 10 if CUDA else 2")
    crew = Crew([idea("Narrower MLP", {"constant": "MLP_RATIO", "value": "2"}),
                 idea("Cheaper MLP", {"constant": "MLP_RATIO", "value": "5"})],
                {"Narrower MLP": [wrong, wrong],
                 "Cheaper MLP": [wrong, ("MLP_RATIO = 4", "MLP_RATIO = 3")]})  # corrected into a change that ran
    refused: list[ExperimentRecord] = []
    with ScriptedLLMServer(crew) as server, ExperimentMemory.open(tmp_path / "mem", device="cuda") as memory:
        anthropic_env(server)
        past(memory)
        candidate = prepare_until_one(bench(memory, UsageLedger()), refused, proposals=2)
    assert candidate is None
    codes = crew.of("CodeEdit")
    named = "the idea sets MLP_RATIO = 2; the edit leaves MLP_RATIO unchanged"
    assert named in codes[1].text and "the idea does not change DEPTH; the edit sets it to 10" in codes[1].text
    reviews = crew.of("Review")
    assert named in reviews[0].text  # still wrong after one more try: the reviewer sees the finding
    veto, repeat = refused
    assert (veto.status, veto.rule) == ("veto", "reviewer") and named in veto.decision_reason
    # the second idea's corrected edit is the fingerprint of a change that already ran: refused before GPU time
    assert (repeat.status, repeat.rule, repeat.repeat_of) == ("repeat", "novelty-exact", "night1/0001")
    assert "MLP_RATIO 4 -> 3" in repeat.decision_reason


@pytest.mark.slow
def test_an_offline_run_of_two_dozen_experiments_never_trains_a_fingerprint_twice(tmp_path):
    """The real loop with the offline crew (two candidates prepared at once), on the toy train.py."""
    from benchmarks.offline_fingerprints import run

    report = run(tmp_path, runs=1, experiments=24)
    assert report["trained"] >= 24 and report["fingerprinted"] == report["trained"]
    assert report["duplicates"] == {} and report["distinct"] == report["fingerprinted"]


def test_a_trained_edit_that_departs_from_its_idea_keeps_the_findings_in_its_record(tmp_path):
    from agents.bench.runner import RunResult
    from agents.crew.candidates import Candidate
    from agents.crew.schemas import CodeEdit, Idea, Review
    from agents.record.journal import JournalEntry
    from agents.record.runbook import RunBook

    class Crew:
        degraded_roles: list[str] = []

    new = TRAIN.replace("DEPTH = 8 if CUDA", "DEPTH = 10 if CUDA")
    idea_ = Idea(title="Narrower MLP", rationale="", expected_effect="", category="architecture",
                 changes=[{"constant": "MLP_RATIO", "value": "2"}])
    candidate = Candidate("0001", idea_, CodeEdit(blocks=[]), "c0", TRAIN, new, review=Review(verdict="approve"),
                          findings=["the idea sets MLP_RATIO = 2; the edit leaves MLP_RATIO unchanged"])
    book = RunBook(tmp_path, "t", "full", Crew(), None, None, lambda *a, **k: None, lambda phase: None)
    entry = JournalEntry(exp_id="0001", phase="trained", idea=idea_.model_dump(), new_text=new, base_commit="c0")
    result = RunResult("ok", 1.0, {}, {}, 0, 1.0, tmp_path / "log", "")
    for _ in range(2):  # a resumed run records it again: the findings are not repeated
        record = book.record_for(entry, result, candidate, 1.01, TRAIN)
        book.records.append(record)
    assert json.loads(record.review_reasons) == [
        "finding (idea vs edit): the idea sets MLP_RATIO = 2; the edit leaves MLP_RATIO unchanged"]
    assert json.loads(record.changes) == [{"constant": "MLP_RATIO", "value": "2"}]


def test_the_schema_offers_train_py_s_constants_and_parts_and_asks_again_for_others(anthropic_env):
    from agents.crew.idea_schema import idea_schema, plain_idea
    from agents.crew.llm import make_llm

    schema = idea_schema(TRAIN)
    properties = schema.model_json_schema()["$defs"]
    assert "MLP_RATIO" in properties["ConstantChange"]["properties"]["constant"]["enum"]
    assert "CUDA" not in properties["ConstantChange"]["properties"]["constant"]["enum"]  # a profile flag, not a knob
    assert "MLP.forward" in properties["PartChange"]["properties"]["part"]["enum"]
    wrong = idea("Narrower", {"constant": "MLP_RATO", "value": "3"})
    not_python = idea("Narrower", {"constant": "MLP_RATIO", "value": "three please"})
    right = idea("Narrower", {"constant": "MLP_RATIO", "value": 3})  # a JSON number is written as Python
    replies = [Reply.json(x, input_tokens=1500, output_tokens=80) for x in (wrong, not_python, right)]
    with ScriptedLLMServer(replies) as server:
        anthropic_env(server)
        llm = make_llm("anthropic/claude-test", role="hypothesis", ledger=UsageLedger(), max_retries=0,
                       output_retries=2)
        answer = plain_idea(llm.call("Propose one change.", response_model=schema))
        assert "MLP_RATIO" in server.requests[1].last_user_text  # the feedback names what may be used
        assert "not a Python expression" in server.requests[2].last_user_text
    assert type(answer) is Idea and answer.changes[0].model_dump() == {"constant": "MLP_RATIO", "value": "3"}
