"""Each kind of model server, through the real openai / anthropic SDKs: the structured-output form `auto` settles
on, what a refusal looks like (by its body, not its status), context windows, overflow and truncation."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from agents.crewai_env import quiet_crewai

quiet_crewai()
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-test-"))

from agents.config import load_config  # noqa: E402
from agents.crew.llm import ContextOverflow, UsageLedger, make_llm  # noqa: E402
from agents.crew.llm.servers import classify_error  # noqa: E402
from agents.crew.roles import ResearchCrew, build_llms  # noqa: E402
from agents.crew.schemas import CodeEdit, Idea, Review  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402
from tests.llm_server import ParsedRequest, Reply, ScriptedLLMServer  # noqa: E402
from tests.model_servers import (  # noqa: E402
    LlamaCppPythonKind,
    LlamaServerKind,
    OllamaKind,
    OpenAIKind,
    PlainKind,
    VLLMKind,
)

REVIEW = {"verdict": "approve", "reasons": ["small"]}
IDEA = {"title": "DEPTH 2 -> 3", "rationale": "more capacity", "expected_effect": "lower val_bpb",
        "category": "architecture"}


def _answer(request: ParsedRequest) -> Reply:
    return Reply.json({"Review": REVIEW, "Idea": IDEA, "CodeEdit": {"path": "train.py", "blocks": []}}
                      .get(request.schema_name or "", REVIEW))


def _local(server: ScriptedLLMServer, ledger: UsageLedger | None = None, **options):
    return make_llm("openai/local", role="reviewer", ledger=ledger or UsageLedger(), base_url=server.base_url_openai,
                    max_retries=2, **options)


def _forms(server: ScriptedLLMServer) -> list[str | None]:
    return [(r.body.get("response_format") or {}).get("type") or ("tool" if r.body.get("tools") else None)
            for r in server.requests]


@pytest.mark.parametrize("kind, calls, forms", [
    (VLLMKind(), 2, ["json_schema", "json_schema"]),
    (OllamaKind(), 2, ["json_schema", "json_schema"]),
    (LlamaServerKind(), 2, ["json_schema", "json_schema"]),
    # refused once (HTTP 500, pydantic's body), at once without the SDK's retries; then json_object + schema
    (LlamaCppPythonKind(), 2, ["json_schema", "json_object", "json_object"]),
    # answers in prose around the JSON whatever it is asked (each reply still parses): each form is given up
    # once, then only the prompt carries the schema
    (PlainKind(), 3, ["json_schema", "json_object", None]),
], ids=lambda v: getattr(v, "name", ""))
def test_auto_settles_on_a_form_each_kind_of_server_accepts(kind, calls, forms):
    ledger = UsageLedger()
    with ScriptedLLMServer(_answer, behaviour=kind) as server:
        llm = _local(server, ledger)
        for _ in range(calls):
            assert llm.call("Review the diff.", response_model=Review) == Review(**REVIEW)
        assert _forms(server) == forms
    assert ledger.faults.by_role().get("reviewer", {}).get("server_error") is None  # a refusal is not a 5xx fault
    if forms[0] != forms[-1]:  # every form given up was announced, once
        assert len(ledger.faults.notices) == len(set(forms)) - 1
        assert "refused structured output as json_schema" in ledger.faults.notices[0].message


def test_openai_gets_strict_schemas_and_compatible_servers_nullable_optional_fields(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedLLMServer(_answer, behaviour=OpenAIKind()) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url_openai)  # the official endpoint's code path
        official = make_llm("openai/gpt-4.1", role="hypothesis", ledger=UsageLedger(), max_retries=0)
        assert official.call("Propose one json idea.", response_model=Idea).category == "architecture"
    strict = server.requests[0].body["response_format"]["json_schema"]
    assert strict["strict"] is True and set(strict["schema"]["required"]) >= {"retry_of", "category"}
    assert {"type": "null"} in strict["schema"]["properties"]["retry_of"]["anyOf"]
    with ScriptedLLMServer(_answer, behaviour=VLLMKind()) as server:
        _local(server).call("Propose one idea.", response_model=Idea)
    loose = server.requests[0].body["response_format"]["json_schema"]
    assert loose["strict"] is False and "retry_of" not in loose["schema"]["required"]  # optional: not demanded
    assert {"type": "null"} in loose["schema"]["properties"]["retry_of"]["anyOf"]
    for schema in (strict["schema"], loose["schema"]):  # a closed set is an enum everywhere
        assert "learning_rate" in schema["properties"]["category"]["enum"]


@pytest.mark.parametrize("kind, window, source", [
    (VLLMKind(n_ctx=32768), 32768, "max_model_len"),
    (LlamaServerKind(n_ctx=4096), 4096, "/props"),
    (OllamaKind(num_ctx=2048), 2048, "num_ctx"),
    (OllamaKind(num_ctx=2048, declared=False), 4096, "Ollama's default"),
    (LlamaCppPythonKind(), 8192, "default"),  # reports nothing: the default for self-hosted servers
], ids=lambda v: getattr(v, "name", str(v)))
def test_context_window_is_what_the_server_reports(kind, window, source):
    with ScriptedLLMServer(_answer, behaviour=kind) as server:
        llm = _local(server)
        assert llm.context_window() == window and source in llm.context_source()
        assert _local(server, context_tokens=1024).context_window() == 1024  # crew.yaml may only lower it


def test_a_context_overflow_is_never_taken_for_a_refused_form():
    # llama-server's own words: HTTP 400, which a status-only rule took for "no json_schema here"
    body = {"error": {"code": 400, "message": "request (8253 tokens) exceeds the available context size (8192 tokens), "
                      "try increasing it", "type": "exceed_context_size_error", "n_prompt_tokens": 8253, "n_ctx": 8192}}
    refusal = classify_error(400, body["error"], mode="json_schema")
    assert (refusal.kind, refusal.limit, refusal.prompt_tokens) == ("context", 8192, 8253)
    vllm = ("'max_tokens' or 'max_completion_tokens' is too large: 8000. This model's maximum context length is 4096 "
            "tokens and your request has 2778 input tokens (8000 > 4096 - 2778). None")
    assert classify_error(400, {"message": vllm, "type": "BadRequestError"}, mode="json_schema").limit == 4096
    older_llama_server = {"code": 500, "message": 'response_format type must be one of "text" or "json_object", but '
                          "got: json_schema", "type": "server_error"}
    assert classify_error(500, older_llama_server, mode="json_schema").kind == "format"
    assert classify_error(500, {"message": "CUDA out of memory", "type": "server_error"}, mode="json_schema").kind \
        == "other"


def test_overflow_at_the_server_shortens_the_prompt_and_keeps_the_form():
    # the server's tokenizer counts far more finely than the client expects: its first prompt is too long
    kind = LlamaServerKind(n_ctx=4800, chars_per_token=2.2)  # room for the Idea schema (its changes)
    train_py = "\n".join(f"CONSTANT_{i} = {i}  # a line of train.py that must reach the model whole" for i in range(20))
    history = [ExperimentRecord(exp_id=f"{i:04d}", tag="t", status="discard", description=f"idea number {i} " * 6,
                                val_bpb=1.0 + i / 1000, lesson="a lesson worth a few words " * 4) for i in range(20)]
    config = load_config(_repo_crew())
    with ScriptedLLMServer(_answer, behaviour=kind) as server:
        ledger = UsageLedger()
        config.roles.hypothesis.model = "openai/local"
        config.roles.hypothesis.base_url = server.base_url_openai
        config.roles.hypothesis.max_tokens = 512
        llms = build_llms(config, ledger, lambda role: _offline_stub(role), env={})
        crew = ResearchCrew(config, "# Research program\nLower val_bpb.", ledger, llms)
        idea = crew.propose({"train_py": train_py, "best": "1.0", "recall": "", "feedback": "", "history": history,
                             "device": "cpu"})
    assert idea.title == IDEA["title"]
    first, *later = server.requests
    assert later, "the refused prompt was not asked again"
    assert all(r.body["response_format"]["type"] == "json_schema" for r in server.requests)  # never a form change
    assert train_py in later[-1].text  # train.py whole, history cut oldest first with a summary
    assert "earlier experiments not shown" in later[-1].text and "0019 discard" in later[-1].text
    assert len(later[-1].text) < len(first.text)
    assert ledger.faults.by_role()["hypothesis"]["overflow"] >= 1
    assert first.text.count("# Research program") == 1  # program.md's own heading is not repeated


def test_a_reply_cut_by_the_window_names_the_window_not_max_tokens():
    kind = LlamaCppPythonKind(n_ctx=900, chars_per_token=3.0)
    long_edit = {"path": "train.py", "blocks": [{"search": "x" * 3000, "replace": "y"}], "summary": ""}
    with ScriptedLLMServer(lambda r: Reply.json(long_edit), behaviour=kind) as server:
        llm = _local(server, context_tokens=4096, max_tokens=2048)
        with pytest.raises(ContextOverflow) as caught:
            llm.call("Edit train.py.", response_model=CodeEdit)
    message = str(caught.value)
    assert "cut off by the context window" in message and "not by max_tokens=2048" in message
    assert caught.value.reply_cut and llm.context_window() < 1000  # learned from the cut reply


def test_timeouts_default_by_kind_of_server():
    os.environ.setdefault("ANTHROPIC_API_KEY", "test")
    local = make_llm("openai/m", role="coder", ledger=UsageLedger(), base_url="http://127.0.0.1:9/v1")
    hosted = make_llm("anthropic/claude-sonnet-4-5", role="coder", ledger=UsageLedger())
    assert (local.timeout_s, local.max_retries) == (900, 1) and (hosted.timeout_s, hosted.max_retries) == (120, 3)
    assert make_llm("openai/m", role="coder", ledger=UsageLedger(), base_url="http://127.0.0.1:9/v1",
                    timeout_s=30).timeout_s == 30


def test_anthropic_base_url_from_crew_yaml_and_no_trace_headers(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    config = load_config(_repo_crew())
    with ScriptedLLMServer(_answer) as server:
        config.roles.reviewer.model = "anthropic/claude-sonnet-4-5"
        config.roles.reviewer.base_url = server.base_url_anthropic
        llms = build_llms(config, UsageLedger(), _offline_stub, env={})
        crew = ResearchCrew(config, "program", None, llms)
        review = crew.review({"idea": Idea(**IDEA), "diff": "-a\n+b", "guard_report": "pass", "guard_ok": True,
                              "similar": ""})
    assert review.verdict == "approve"
    (request,) = server.requests
    assert request.protocol == "anthropic"
    assert "sk-ant-test" in request.headers.get("x-api-key", "") + request.headers.get("authorization", "")
    # CrewAI puts its crew ids into OpenTelemetry baggage; nothing of it may reach a provider
    assert not {"baggage", "traceparent", "tracestate"} & set(request.headers)


def _repo_crew() -> Path:
    return Path(__file__).resolve().parents[1] / "crew.yaml"


def _offline_stub(role: str):
    from agents.crew.llm.offline import OfflineLLM

    return OfflineLLM()

