"""Provider adapters through the real anthropic/openai SDKs against the scripted server on 127.0.0.1."""

from __future__ import annotations

import os
import time
import traceback

import pytest

from agents.crew.llm import BudgetExceeded, LLMCallError, LLMConfigError, LLMOutputError, UsageLedger, make_llm
from agents.crew.schemas import CodeEdit, Idea, Review
from agents.crewai_env import quiet_crewai
from tests.llm_server import ParsedRequest, Reply, ReplyQueue, ScriptedLLMServer

quiet_crewai()
from crewai import Agent, Crew, Process, Task  # noqa: E402

ANTHROPIC_KEY = "sk-ant-test-0123456789-SECRET"
OPENAI_KEY = "sk-test-9876543210-SECRET"
MODELS = {"anthropic": "anthropic/claude-sonnet-4-5", "openai": "openai/gpt-4.1-mini"}
PROTOCOLS = ["anthropic", "openai"]

IDEA = {
    "title": "MATRIX_LR 0.04 -> 0.03",
    "rationale": "The loss curve is noisy late in training.",
    "expected_effect": "val_bpb drops by about 0.002.",
    "category": "learning_rate",
    "retry_of": None,
}
REVIEW = {"verdict": "approve", "reasons": ["small, honest change"]}


@pytest.fixture(autouse=True)
def api_keys(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("CREWAI_STORAGE_DIR", str(tmp_path / "crewai"))  # keep CrewAI's sqlite out of $HOME
    for name in ("ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):  # restored after the test, whatever `adapter` sets
        monkeypatch.setenv(name, "http://127.0.0.1:9")


def adapter(protocol: str, server: ScriptedLLMServer, ledger: UsageLedger, role: str = "reviewer", **options):
    """An adapter on the official-endpoint code path (no base_url in its settings), pointed at the scripted server
    through the SDKs' documented ANTHROPIC_BASE_URL / OPENAI_BASE_URL variables."""
    os.environ["ANTHROPIC_BASE_URL"] = server.base_url_anthropic
    os.environ["OPENAI_BASE_URL"] = server.base_url_openai
    settings = {"timeout_s": 5.0, "max_retries": 2, "api_key_env": f"{protocol.upper()}_API_KEY"} | options
    return make_llm(MODELS[protocol], role=role, ledger=ledger, **settings)


def one_task_crew(llm, output_model, description: str) -> Crew:
    agent = Agent(
        role="Hypothesis researcher",
        goal="Propose the next experiment",
        backstory="You study small language models.",
        llm=llm,
        max_retry_limit=0,
        verbose=False,
    )
    task = Task(description=description, expected_output="One idea.", agent=agent, output_pydantic=output_model)
    return Crew(agents=[agent], tasks=[task], process=Process.sequential, verbose=False)


# -- structured output through a real CrewAI crew -------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_crew_task_gets_validated_pydantic_output(protocol: str) -> None:
    def responder(request: ParsedRequest) -> Reply:
        assert request.schema_name == "Idea", request.body
        assert "title" in request.schema["properties"]
        return Reply.json(IDEA, input_tokens=900, output_tokens=120)

    ledger = UsageLedger()
    with ScriptedLLMServer(responder) as server:
        llm = adapter(protocol, server, ledger, role="hypothesis")
        with ledger.experiment("exp-0007"):
            result = one_task_crew(llm, Idea, "Propose one change to train.py.").kickoff()

    assert server.errors == []
    assert isinstance(result.pydantic, Idea)
    assert result.pydantic.model_dump() == {**IDEA, "changes": []}
    [request] = server.requests
    assert "Hypothesis researcher" in request.system
    assert "Propose one change to train.py." in request.text
    if protocol == "anthropic":
        assert request.body["tool_choice"]["name"] == "Idea"
    else:
        assert request.body["response_format"]["type"] == "json_schema"
        assert request.body["response_format"]["json_schema"]["strict"] is True
    assert ledger.totals(role="hypothesis").input_tokens == 900
    assert ledger.by_experiment()["exp-0007"].output_tokens == 120
    assert result.token_usage.prompt_tokens == 900  # reported to CrewAI as well
    assert result.token_usage.completion_tokens == 120


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_plain_text_call_returns_text(protocol: str) -> None:
    with ScriptedLLMServer([Reply.message("Loss looked fine.")]) as server:
        llm = adapter(protocol, server, UsageLedger())
        assert llm.call("How did it go?") == "Loss looked fine."
    assert server.requests[0].schema is None


def test_async_call_keeps_the_experiment_tag() -> None:
    import asyncio

    ledger = UsageLedger()
    with ScriptedLLMServer([Reply.json(REVIEW)]) as server:
        llm = adapter("anthropic", server, ledger)
        with ledger.experiment("async-1"):
            review = asyncio.run(llm.acall("Review.", response_model=Review))
    assert review.verdict == "approve"
    assert ledger.totals(experiment="async-1").calls == 1


# -- transport faults: the SDK's own retries ------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rate_limit_and_server_errors_are_retried_then_succeed(protocol: str) -> None:
    overloaded = 529 if protocol == "anthropic" else 503
    replies = [
        Reply.error(429, retry_after=0.01),
        Reply.error(500, retry_after=0.01),
        Reply.error(overloaded, retry_after=0.01),
        Reply.json(REVIEW),
    ]
    ledger = UsageLedger()
    with ScriptedLLMServer(replies) as server:
        review = adapter(protocol, server, ledger, max_retries=3).call("Review this diff.", response_model=Review)
    assert review == Review(**REVIEW)
    assert len(server.requests) == 4
    assert ledger.totals().calls == 1  # failed attempts carry no usage


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_persistent_rate_limit_gives_clear_error_after_sdk_retries_only(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.error(429, "slow down", retry_after=0.01)) as server:
        llm = adapter(protocol, server, UsageLedger(), max_retries=2)
        with pytest.raises(LLMCallError) as caught:
            llm.call("Review this diff.", response_model=Review)
    message = str(caught.value)
    assert caught.value.status == 429
    assert f"{protocol}/{MODELS[protocol].split('/')[1]}" in message
    assert "HTTP 429" in message and "after 2 retries" in message
    # exactly the SDK's attempts: no second retry layer (CrewAI's) on top
    assert len(server.requests) == 3


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_dropped_connection_is_retried(protocol: str) -> None:
    with ScriptedLLMServer([Reply.dropped(), Reply.json(REVIEW)]) as server:
        review = adapter(protocol, server, UsageLedger()).call("Review.", response_model=Review)
    assert review.verdict == "approve"
    assert len(server.requests) == 2


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_slow_reply_times_out_promptly(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.slow(30), lifetime_s=20) as server:
        llm = adapter(protocol, server, UsageLedger(), timeout_s=0.3, max_retries=1)
        started = time.monotonic()
        with pytest.raises(LLMCallError, match="no reply within timeout_s=0.3"):
            llm.call("Review.", response_model=Review)
        elapsed = time.monotonic() - started
    assert len(server.requests) == 2  # first try + one SDK retry
    assert elapsed < 10, f"timeout took {elapsed:.1f}s"  # two 0.3 s timeouts and a backoff, with slack for load


# -- malformed output: bounded re-asks with the problem fed back --------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_malformed_output_is_retried_with_feedback(protocol: str) -> None:
    replies = [
        Reply.message("Sure! I approve."),  # not JSON at all
        Reply.json({"verdict": "maybe"}),  # JSON, wrong schema
        Reply.json(REVIEW),
    ]
    ledger = UsageLedger()
    with ScriptedLLMServer(replies) as server:
        review = adapter(protocol, server, ledger, output_retries=2).call("Review.", response_model=Review)
    assert review == Review(**REVIEW)
    first_feedback = server.requests[1].last_user_text
    second_feedback = server.requests[2].last_user_text
    assert "not JSON" in first_feedback
    assert "verdict" in second_feedback and "Review schema" in second_feedback
    # each retry replaces the failed reply: the original request plus one note, never a pile of old replies
    assert "Sure! I approve." not in server.requests[2].text and "maybe" not in server.requests[2].text
    assert "not JSON" not in server.requests[2].text
    assert len(server.requests[2].body["messages"]) == len(server.requests[1].body["messages"])
    assert ledger.totals().calls == 3  # every answered attempt is paid for
    assert ledger.faults.by_role() == {"reviewer": {"malformed": 2, "retries": 2}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_truncated_output_is_retried(protocol: str) -> None:
    replies = [Reply.json({"blocks": [{"search": "x"}]}, truncated=True), Reply.json({"blocks": []})]
    with ScriptedLLMServer(replies) as server:
        edit = adapter(protocol, server, UsageLedger()).call("Edit.", response_model=CodeEdit)
    assert edit == CodeEdit(blocks=[])
    assert "max_tokens" in server.requests[1].last_user_text


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_garbage_until_the_end_raises_output_error(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.garbage()) as server:
        llm = adapter(protocol, server, UsageLedger(), output_retries=1)
        with pytest.raises(LLMOutputError, match=r"no usable Review after 2 attempts.*could not be read"):
            llm.call("Review.", response_model=Review)
    assert len(server.requests) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_invalid_json_until_the_end_raises_output_error(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.message("{'verdict': approve")) as server:
        llm = adapter(protocol, server, UsageLedger(), output_retries=2)
        with pytest.raises(LLMOutputError) as caught:
            llm.call("Review.", response_model=Review)
    assert caught.value.attempts == 3 and "not JSON" in caught.value.last_problem
    assert len(server.requests) == 3


def test_compatible_server_without_json_schema_gets_the_schema_in_the_prompt() -> None:
    def responder(request: ParsedRequest) -> Reply:
        if "response_format" in request.body:
            return Reply.error(400, "response_format is not supported")
        return Reply.message('Here you go:\n```json\n{"verdict": "revise", "reasons": ["too big"]}\n```')

    with ScriptedLLMServer(responder) as server:
        llm = make_llm("openai/qwen2.5-coder", role="reviewer", ledger=UsageLedger(), base_url=server.base_url_openai)
        assert llm.call("Review.", response_model=Review).verdict == "revise"
        assert llm.call("Review again.", response_model=Review).verdict == "revise"
    # json_schema, then json_object were refused (by the body's words, not the status); the rest of the run
    # writes the schema into the prompt without asking again
    assert [r.body.get("response_format", {}).get("type") for r in server.requests] == [
        "json_schema", "json_object", None, None]
    assert "JSON schema" in server.requests[2].system and '"verdict"' in server.requests[2].system
    # no api_key_env for a compatible server: a placeholder, never the real OpenAI key
    assert server.requests[0].headers["authorization"] == "Bearer not-needed"


# -- accounting and budgets -------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_usage_is_counted_per_role_and_experiment_in_tokens_and_usd(protocol: str) -> None:
    ledger = UsageLedger()
    reply = Reply.json(REVIEW, input_tokens=1000, output_tokens=200)
    with ScriptedLLMServer(lambda r: reply) as server:
        coder = adapter(protocol, server, ledger, role="coder", usd_per_mtok_in=3.0, usd_per_mtok_out=15.0)
        reviewer = adapter(protocol, server, ledger, role="reviewer", usd_per_mtok_in=1.0, usd_per_mtok_out=5.0)
        with ledger.experiment("e1"):
            coder.call("a", response_model=Review)
            reviewer.call("b", response_model=Review)
        mark = ledger.mark()
        with ledger.experiment("e2"):
            coder.call("c", response_model=Review)

    roles = ledger.by_role()
    assert roles["coder"].calls == 2 and roles["coder"].input_tokens == 2000 and roles["coder"].output_tokens == 400
    assert roles["coder"].usd == pytest.approx(2 * (1000 * 3.0 + 200 * 15.0) / 1e6)
    assert roles["reviewer"].usd == pytest.approx((1000 * 1.0 + 200 * 5.0) / 1e6)
    assert ledger.totals(experiment="e1").calls == 2
    assert ledger.since(mark).usd == pytest.approx(0.006)
    assert ledger.totals().tokens == 3600
    assert ledger.summary()["by_role"]["coder"]["calls"] == 2


def test_table_prices_apply_and_unknown_models_cost_nothing_but_count_tokens() -> None:
    ledger = UsageLedger()
    reply = Reply.json(REVIEW, input_tokens=1_000_000, output_tokens=100_000)
    with ScriptedLLMServer(lambda r: reply) as server:
        adapter("anthropic", server, ledger, role="a").call("x", response_model=Review)  # claude-sonnet-4-5: $3/$15
        local = make_llm("openai/my-local-model", role="b", ledger=ledger, base_url=server.base_url_openai)
        local.call("x", response_model=Review)
    assert ledger.totals(role="a").usd == pytest.approx(3.0 + 1.5)
    assert ledger.totals(role="b").usd == 0.0 and ledger.totals(role="b").tokens == 1_100_000


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_budget_is_refused_before_any_request_is_sent(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.json(REVIEW)) as server:
        # worst case of one call: 4096 output tokens at $15/M = $0.061 > $0.01
        priced = adapter(protocol, server, UsageLedger(max_usd=0.01), usd_per_mtok_out=15.0, max_tokens=4096)
        with pytest.raises(BudgetExceeded, match=r"max_usd=\$0.01"):
            priced.call("Review.", response_model=Review)
        counted = adapter(protocol, server, UsageLedger(max_tokens=1000), max_tokens=4096)
        with pytest.raises(BudgetExceeded, match="max_tokens=1,000"):
            counted.call("Review.", response_model=Review)
    assert server.requests == []


def test_budget_allows_calls_until_spent() -> None:
    ledger = UsageLedger(max_tokens=2500)
    with ScriptedLLMServer(lambda r: Reply.json(REVIEW, input_tokens=900, output_tokens=100)) as server:
        llm = adapter("anthropic", server, ledger, max_tokens=500)
        llm.call("a", response_model=Review)  # reserves ~worst case, spends 1000
        llm.call("b", response_model=Review)  # spent 2000
        with pytest.raises(BudgetExceeded):
            llm.call("c", response_model=Review)  # 2000 + estimate + 500 > 2500
    assert len(server.requests) == 2


# -- configuration and secrets ----------------------------------------------------------------------------


def test_missing_key_is_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(LLMConfigError) as caught:
        make_llm("anthropic/claude-sonnet-4-5", role="coder", ledger=UsageLedger())
    message = str(caught.value)
    assert "ANTHROPIC_API_KEY is not set" in message and "'coder'" in message and "\n" not in message
    with pytest.raises(LLMConfigError, match="MY_VLLM_KEY is not set"):
        make_llm(
            "openai/llama", role="coder", ledger=UsageLedger(), base_url="http://127.0.0.1:9", api_key_env="MY_VLLM_KEY"
        )


@pytest.mark.parametrize("model", ["offline", "auto", "gemini/pro", "anthropic/", "claude-sonnet-4-5"])
def test_unknown_model_form_lists_the_allowed_forms(model: str) -> None:
    with pytest.raises(LLMConfigError, match=r"allowed forms are anthropic/<model>, openai/<model>"):
        make_llm(model, role="coder", ledger=UsageLedger())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_key_never_appears_in_errors_or_reprs(protocol: str) -> None:
    key = ANTHROPIC_KEY if protocol == "anthropic" else OPENAI_KEY

    def echo_the_key(request: ParsedRequest) -> Reply:  # a hostile server that quotes the credentials back
        sent = request.headers.get("x-api-key") or request.headers.get("authorization", "")
        return Reply.error(401, f"invalid credentials: {sent}")

    with ScriptedLLMServer(echo_the_key) as server:
        llm = adapter(protocol, server, UsageLedger())
        with pytest.raises(LLMCallError) as caught:
            llm.call("Review.", response_model=Review)
    assert key in server.requests[0].headers.get("x-api-key", server.requests[0].headers.get("authorization", ""))
    shown = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + repr(llm) + str(llm.model_dump())
    assert key not in shown
    assert "HTTP 401" in str(caught.value) and f"{protocol.upper()}_API_KEY" in str(caught.value)
    assert len(server.requests) == 1  # 401 is not retried


# -- the scripted server itself ---------------------------------------------------------------------------


def test_scripted_server_stops_by_itself() -> None:
    import urllib.error
    import urllib.request

    server = ScriptedLLMServer(ReplyQueue([]), lifetime_s=0.2).start()
    url = server.base_url_openai + "/chat/completions"
    time.sleep(0.5)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=1)


def test_concurrent_calls_are_tagged_per_thread_and_held_against_the_budget() -> None:
    import threading

    review_tokens = 300  # max_tokens of each call: the worst-case output
    slow = Reply.json(REVIEW, input_tokens=50, output_tokens=20).after(1.0)
    with ScriptedLLMServer(lambda r: slow) as server:
        probe = adapter("openai", server, UsageLedger(), max_tokens=review_tokens)
        worst_case = probe.get_input_tokens_count("call", response_model=Review) + review_tokens
        ledger = UsageLedger(max_tokens=int(2.5 * worst_case))  # room for two calls in flight, not three
        llm = adapter("openai", server, ledger, max_tokens=review_tokens)
        refused: list[str] = []

        def work(experiment: str) -> None:
            with ledger.experiment(experiment):
                try:
                    llm.call("call", response_model=Review)
                except BudgetExceeded:
                    refused.append(experiment)

        threads = [threading.Thread(target=work, args=(f"e{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=20)

    assert len(refused) == 2 and len(server.requests) == 2
    done = {e for e in ledger.by_experiment()}
    assert done == {f"e{i}" for i in range(4)} - set(refused)
    assert ledger.totals().tokens == 2 * 70
