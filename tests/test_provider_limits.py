"""What real servers do at their limits, through the real openai / anthropic SDKs against the scripted servers:
`retry-after` on every request (the first one to a server and its context probes included), replies cut short
(by max_tokens, by the server's own reply limit, by the window), the token ratio learned from the server's
prompt_tokens, and an overflow trimmed and sent again, with a role given up only when train.py cannot fit."""

from __future__ import annotations

import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agents.crewai_env import quiet_crewai

quiet_crewai()
os.environ.setdefault("CREWAI_STORAGE_DIR", tempfile.mkdtemp(prefix="crewai-test-"))

from agents.config import load_config  # noqa: E402
from agents.crew.llm import ContextOverflow, LLMOutputError, UsageLedger, make_llm  # noqa: E402
from agents.crew.llm.servers import PRIOR_TOKEN_RATIO  # noqa: E402
from agents.crew.roles import ResearchCrew, RoleError, build_llms  # noqa: E402
from agents.crew.schemas import CodeEdit, Idea, Review  # noqa: E402
from agents.record.results import ExperimentRecord  # noqa: E402
from tests.llm_server import ParsedRequest, Reply, ReplyQueue, ScriptedLLMServer  # noqa: E402
from tests.model_servers import LlamaCppPythonKind, LlamaServerKind, ServerKind  # noqa: E402

REVIEW = {"verdict": "approve", "reasons": ["small"]}
IDEA = {"title": "DEPTH 2 -> 3", "rationale": "more capacity", "expected_effect": "lower val_bpb",
        "category": "architecture"}
WORDY_IDEA = {**IDEA, "rationale": "a long and winding rationale " * 40}
PROTOCOLS = ["openai", "anthropic"]
CONCISE = "concise"  # the word the retry note asks for


def _answer(request: ParsedRequest) -> Reply:
    return Reply.json({"Review": REVIEW, "Idea": IDEA, "CodeEdit": {"path": "train.py", "blocks": []}}
                      .get(request.schema_name or "", REVIEW))


def _wordy_until_asked(request: ParsedRequest) -> Reply:
    """A model that rambles on the first try and keeps it short when told to."""
    return Reply.json(IDEA if CONCISE in request.last_user_text else WORDY_IDEA)


def _local(protocol: str, server: ScriptedLLMServer, ledger: UsageLedger | None = None, role: str = "hypothesis",
           **options):
    """An adapter for a self-hosted server (a base_url, structured: auto) of either protocol."""
    base_url = server.base_url_openai if protocol == "openai" else server.base_url_anthropic
    return make_llm(f"{protocol}/local", role=role, ledger=ledger or UsageLedger(), base_url=base_url,
                    **({"max_retries": 2} | options))


def _chat_gaps(server: ScriptedLLMServer) -> list[float]:
    times = [r.received_at for r in server.requests]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


# -- retry-after holds for every request -----------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_on_the_first_request_to_a_base_url_server_is_waited_out(protocol: str, status: int) -> None:
    # the first structured request to a self-hosted server also finds its form; it used to go out without the
    # SDK's retries and was re-sent 0.04 s after a 429, whatever retry-after said
    ledger = UsageLedger()
    replies = ReplyQueue([Reply.error(status, "busy, come back later", retry_after=1)], default=_answer)
    with ScriptedLLMServer(replies) as server:
        review = _local(protocol, server, ledger, role="reviewer").call("Review the diff.", response_model=Review)
    assert review == Review(**REVIEW)
    assert len(server.requests) == 2
    assert _chat_gaps(server)[0] >= 0.95, f"re-sent after {_chat_gaps(server)[0]:.2f} s, not the 1 s asked"
    kind = "rate_limited" if status == 429 else "server_error"
    assert ledger.faults.by_role()["reviewer"][kind] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retry_after_holds_on_every_later_request_too(protocol: str) -> None:
    replies = ReplyQueue([Reply.json(REVIEW), Reply.error(429, retry_after=0.6), Reply.error(429, retry_after=0.6)],
                         default=_answer)
    with ScriptedLLMServer(replies) as server:
        llm = _local(protocol, server, role="reviewer")
        llm.call("Review the diff.", response_model=Review)
        assert llm.call("Review the diff again.", response_model=Review) == Review(**REVIEW)
    assert len(server.requests) == 4
    assert all(gap >= 0.55 for gap in _chat_gaps(server)[1:])


class _BusyProbes(LlamaServerKind):
    """llama-server behind a proxy that answers the first request of each endpoint 429 with retry-after."""

    def __init__(self) -> None:
        super().__init__(n_ctx=4096)
        self.seen: set[str] = set()

    def route(self, method: str, path: str, body: object):
        if path not in self.seen:
            self.seen.add(path)
            return 429, {"error": {"message": "rate limited", "type": "rate_limit"}}, {"retry-after": "1"}
        return super().route(method, path, body)


def test_a_context_probe_answered_429_is_waited_out_not_taken_for_silence() -> None:
    with ScriptedLLMServer(_answer, behaviour=_BusyProbes()) as server:
        llm = _local("openai", server)
        assert llm.context_window() == 4096 and "/props" in llm.context_source()
    props = [t for method, path, t in server.other_requests if path.endswith("/props")]
    assert len(props) == 2 and props[1] - props[0] >= 0.95


def test_a_refused_form_is_read_at_once_but_an_ordinary_5xx_is_retried() -> None:
    # llama-cpp-python refuses json_schema with HTTP 500: asking again would get the same answer
    with ScriptedLLMServer(_answer, behaviour=LlamaCppPythonKind()) as server:
        _local("openai", server, role="reviewer", max_retries=3).call("Review.", response_model=Review)
    assert [r.body["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object"]
    # a 500 that is not a refusal (out of memory) is the SDK's to retry, with its backoff
    replies = ReplyQueue([Reply.error(500, "CUDA out of memory", retry_after=0.3)], default=_answer)
    with ScriptedLLMServer(replies, behaviour=LlamaServerKind()) as server:
        _local("openai", server, role="reviewer").call("Review.", response_model=Review)
    assert [r.body["response_format"]["type"] for r in server.requests] == ["json_schema", "json_schema"]
    assert _chat_gaps(server)[0] >= 0.25


def test_an_anthropic_gateway_refusing_tools_with_a_5xx_is_read_at_once() -> None:
    def gateway(request: ParsedRequest) -> Reply:
        if request.body.get("tools"):
            return Reply.error(500, "tool_choice is not supported by this gateway")
        return Reply.message('{"verdict": "approve", "reasons": ["small"]}')

    ledger = UsageLedger()
    with ScriptedLLMServer(gateway) as server:
        review = _local("anthropic", server, ledger, role="reviewer", max_retries=3).call("Review.",
                                                                                          response_model=Review)
    assert review == Review(**REVIEW)
    assert [bool(r.body.get("tools")) for r in server.requests] == [True, False]  # not retried 3 times first
    assert "refused structured output as tool" in ledger.faults.notices[0].message


# -- replies cut short ------------------------------------------------------------------------------------


def test_a_reply_cut_at_the_servers_own_limit_is_asked_again_concisely_and_the_window_stays() -> None:
    # llama-server started with --n-predict 64: replies stop there whatever max_tokens asks; its window is 8192
    kind = LlamaServerKind(n_ctx=8192, n_predict=64)
    prompt = "Propose one idea for train.py.\n" + "context line of the research record\n" * 300
    ledger = UsageLedger()
    with ScriptedLLMServer(_wordy_until_asked, behaviour=kind) as server:
        llm = _local("openai", server, ledger, max_tokens=1024)
        assert llm.call(prompt, response_model=Idea) == Idea(**IDEA)
        assert CONCISE in server.requests[1].last_user_text and "64 tokens" in server.requests[1].last_user_text
        assert llm.context_window() == 8192  # one cut reply is not a full window
        # the same prompt the server just accepted still goes out whole
        assert llm.call(prompt, response_model=Idea) == Idea(**IDEA)
        assert server.requests[2].text.count("context line") == 300
    [notice] = ledger.faults.notices
    assert "stops replies after about 64 tokens" in notice.message and "--n-predict" in notice.message


def test_a_cut_reply_from_a_server_that_reports_no_window_does_not_shrink_it() -> None:
    # the scenario that poisoned a run: one reply cut short with few tokens was read as a full context, and the
    # next prompt of the same size was refused locally as too large
    kind = LlamaCppPythonKind(n_ctx=16384, n_predict=48)  # reports no window: the default (8192) is assumed
    prompt = "Propose one idea.\n" + "a line of history worth keeping\n" * 500
    with ScriptedLLMServer(_wordy_until_asked, behaviour=kind) as server:
        llm = _local("openai", server, max_tokens=1024, structured="json_object")
        for _ in range(3):
            assert llm.call(prompt, response_model=Idea) == Idea(**IDEA)
        assert llm.context_window() == 8192
    assert len(server.requests) == 6  # each call: the cut reply and one concise retry, never a local refusal
    assert all(r.text.count("a line of history") == 500 for r in server.requests)


def test_a_reply_cut_twice_at_the_servers_limit_names_the_limit() -> None:
    kind = LlamaServerKind(n_ctx=8192, n_predict=40)
    with ScriptedLLMServer(lambda r: Reply.json(WORDY_IDEA), behaviour=kind) as server:
        llm = _local("openai", server, max_tokens=2048, output_retries=3)
        with pytest.raises(LLMOutputError) as caught:
            llm.call("Propose one idea.", response_model=Idea)
    assert len(server.requests) == 2  # retried once, not output_retries times
    assert "reply limit (40 tokens) is below max_tokens=2048" in str(caught.value)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_reply_cut_at_max_tokens_is_retried_once_then_fails_clearly(protocol: str) -> None:
    with ScriptedLLMServer(lambda r: Reply.json(WORDY_IDEA, truncated=True)) as server:
        llm = _local(protocol, server, max_tokens=300, output_retries=3)
        with pytest.raises(LLMOutputError, match=r"cut off at max_tokens=300.*again when asked for a concise reply"):
            llm.call("Propose one idea.", response_model=Idea)
    assert len(server.requests) == 2
    assert CONCISE in server.requests[1].last_user_text


def test_a_reply_cut_by_the_window_gets_more_room_on_a_trimmed_prompt() -> None:
    # llama-cpp-python lowers max_tokens silently to what its window leaves: the reply stops where the window ends
    kind = LlamaCppPythonKind(n_ctx=4096, chars_per_token=3.0)
    history = _history(60)
    edit = {"path": "train.py", "blocks": [{"search": "DEPTH = 2", "replace": "DEPTH = 3"}],
            "summary": "one more block " * 140}  # about 700 tokens: more than the first prompt leaves
    config = _config_for("coder")
    with ScriptedLLMServer(lambda r: Reply.json(edit), behaviour=kind) as server:
        config.roles.coder.base_url = server.base_url_openai
        config.roles.coder.context_tokens = 4096
        config.roles.coder.structured = "json_object"
        crew = ResearchCrew(config, "# Research program\nLower val_bpb.", UsageLedger(),
                            build_llms(config, UsageLedger(), _offline, env={}))
        out = crew.code({"idea": Idea(**IDEA), "train_py": _train_py(40), "feedback": _feedback(history)})
    assert isinstance(out, CodeEdit) and out.blocks[0].replace == "DEPTH = 3"
    cut, *later = server.requests
    assert later and later[-1].max_tokens > cut.max_tokens  # the retry leaves the reply more room
    assert len(later[-1].text) < len(cut.text) and _train_py(40) in later[-1].text  # feedback trimmed, not train.py


# -- the token ratio and overflows -------------------------------------------------------------------------


def test_the_token_ratio_is_learned_from_prompt_tokens_on_replies_not_from_an_overflow() -> None:
    kind = LlamaServerKind(n_ctx=8192, chars_per_token=2.0)  # the server's tokenizer splits finely
    with ScriptedLLMServer(_answer, behaviour=kind) as server:
        llm = _local("openai", server)
        assert llm.token_ratio == PRIOR_TOKEN_RATIO["compatible"]
        with pytest.raises(ContextOverflow) as caught:  # an overflow: its numbers trim this prompt, that is all
            llm.call("Propose.\n" + "word " * 4000, response_model=Idea)  # fits by our count, not by the server's
        assert caught.value.server_ratio and caught.value.server_ratio > 1.5
        assert llm.token_ratio == PRIOR_TOKEN_RATIO["compatible"]
        llm.call("Propose one idea.\n" + "a sentence of ordinary research prose. " * 200, response_model=Idea)
        learned = llm.token_ratio
    request = server.requests[-1]
    assert learned == pytest.approx(kind.prompt_tokens(request) / _local_count(llm, request), rel=0.05)


def test_one_outlying_count_does_not_set_the_ratio_for_the_run() -> None:
    text = "Propose one idea.\n" + "a sentence of ordinary research prose. " * 200
    counts = iter([None, None, None, 20_000])  # one reply with an absurd prompt_tokens (a server's accounting slip)

    def answer(request: ParsedRequest) -> Reply:
        return Reply.json(IDEA, input_tokens=next(counts))

    with ScriptedLLMServer(answer, behaviour=ServerKind()) as server:
        llm = _local("openai", server)
        for _ in range(3):
            llm.call(text, response_model=Idea)
        steady = llm.token_ratio
        llm.call(text, response_model=Idea)
    assert llm.token_ratio == steady  # the median of what it reported, not the largest ever seen
    assert steady == pytest.approx(ServerKind().prompt_tokens(server.requests[0]) / _local_count(llm, server.requests[0]),
                                   rel=0.05)


def test_an_overflow_is_trimmed_to_the_servers_count_and_sent_again_once() -> None:
    # llama-server's own words: "request (8253 tokens) exceeds the available context size (8192 tokens)"
    kind = LlamaServerKind(n_ctx=8192, chars_per_token=1.6)
    ledger = UsageLedger()
    config = _config_for("hypothesis")
    with ScriptedLLMServer(_answer, behaviour=kind) as server:
        config.roles.hypothesis.base_url = server.base_url_openai
        crew = ResearchCrew(config, "# Research program\nLower val_bpb.", ledger,
                            build_llms(config, ledger, _offline, env={}))
        degraded = []
        crew.listeners.append(degraded.append)
        idea = crew.propose(_hypothesis_inputs(_train_py(60), _history(40), recall="recalled lesson\n" * 300))
    assert idea == Idea(**IDEA) and not degraded
    refused, accepted = server.requests  # one trim, by the server's own count, was enough
    assert kind.prompt_tokens(refused) >= 8192 > kind.prompt_tokens(accepted)
    assert _train_py(60) in accepted.text and "earlier experiments not shown" in accepted.text
    assert ledger.faults.by_role()["hypothesis"]["overflow"] == 1


def test_a_role_is_given_up_only_when_train_py_and_the_instructions_cannot_fit() -> None:
    config = _config_for("coder")
    with ScriptedLLMServer(_answer, behaviour=LlamaServerKind(n_ctx=2048)) as server:
        config.roles.coder.base_url = server.base_url_openai
        crew = ResearchCrew(config, "# Research program\nLower val_bpb.", UsageLedger(),
                            build_llms(config, UsageLedger(), _offline, env={}))
        degraded = []
        crew.listeners.append(degraded.append)
        # train.py fits once the feedback is trimmed: no failure
        assert isinstance(crew.code({"idea": Idea(**IDEA), "train_py": _train_py(10),
                                     "feedback": _feedback(_history(80))}), CodeEdit)
        assert not degraded
        with pytest.raises(RoleError) as caught:  # train.py alone is larger than the window
            crew.code({"idea": Idea(**IDEA), "train_py": _train_py(400), "feedback": ""})
    [given_up] = [d for d in degraded if d.role == "coder"]  # at once: asking again cannot help
    assert given_up.failures == 1
    reason = caught.value.reason
    assert "train.py and the instructions alone need about" in reason and "2048-token context window" in reason
    needed, room = (int(reason.split(word)[1].split()[0]) for word in ("need about", "leaves at most"))
    assert needed > room > 0


def test_a_window_too_small_for_the_schema_made_for_train_py_gets_the_plain_idea_schema_announced() -> None:
    # a 7k local server holds the real train.py with the plain Idea schema, not with the one that lists its
    # constants and parts: the hypothesis still answers (without declared changes), and the user is told once
    train_py = (Path(__file__).resolve().parents[1] / "train.py").read_text()
    config, ledger = _config_for("hypothesis"), UsageLedger()
    with ScriptedLLMServer(_answer, behaviour=LlamaServerKind(n_ctx=7168)) as server:
        config.roles.hypothesis.base_url = server.base_url_openai
        crew = ResearchCrew(config, "# Research program\nLower val_bpb.", ledger,
                            build_llms(config, ledger, _offline, env={}))
        degraded = []
        crew.listeners.append(degraded.append)
        ideas = [crew.propose(_hypothesis_inputs(train_py, [])) for _ in range(2)]
    assert ideas == [Idea(**IDEA)] * 2 and not degraded
    asked = [r for r in server.requests if r.schema_name == "Idea"]
    assert len(asked) == 2 and all("MLP_RATIO" not in str(r.schema) for r in asked)
    told = [n.message for n in ledger.faults.notices if "plain Idea schema" in n.message]
    assert len(told) == 1 and "cannot hold train.py" in told[0], ledger.faults.notices


# -- several candidates in flight ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_calls_in_flight_together_share_what_is_learned_and_survive_faults(protocol: str) -> None:
    faults = ReplyQueue([Reply.error(429, retry_after=0.2), Reply.error(503, retry_after=0.2), Reply.dropped()],
                        default=_wordy_until_asked)
    kind = LlamaServerKind(n_ctx=8192, n_predict=64)
    ledger = UsageLedger()
    with ScriptedLLMServer(faults, behaviour=kind) as server:
        llm = _local(protocol, server, ledger, max_tokens=1024)
        prompts = [f"Propose idea {i}.\n" + "a line of the record\n" * 200 for i in range(8)]
        with ThreadPoolExecutor(4) as pool:
            ideas = list(pool.map(lambda p: llm.call(p, response_model=Idea), prompts))
    assert ideas == [Idea(**IDEA)] * 8
    assert llm.context_window() == 8192
    assert sum(1 for n in ledger.faults.notices if "stops replies" in n.message) == 1


# -- helpers ------------------------------------------------------------------------------------------------


def _local_count(llm, request: ParsedRequest) -> int:
    """The prompt as the adapter counted it: the messages it was given, and the schema."""
    from agents.crew.llm.tokens import count_messages

    return count_messages(llm._prompt_texts(llm._format_messages(request.messages[-1][1]), Idea))


def _train_py(n: int) -> str:
    return "\n".join(f"CONSTANT_{i} = {i}  # a line of train.py that must reach the model whole" for i in range(n))


def _history(n: int) -> list[ExperimentRecord]:
    return [ExperimentRecord(exp_id=f"{i:04d}", tag="t", status="discard", description=f"idea number {i} " * 6,
                             val_bpb=1.0 + i / 1000, lesson="a lesson worth a few words " * 4) for i in range(n)]


def _feedback(history: list[ExperimentRecord]) -> str:
    return "\n".join(f"reviewer note on {r.exp_id}: {r.description}" for r in history)


def _hypothesis_inputs(train_py: str, history: list[ExperimentRecord], recall: str = "") -> dict:
    return {"train_py": train_py, "best": "1.0", "recall": recall, "feedback": "", "history": history,
            "device": "cpu"}


def _config_for(role: str):
    config = load_config(Path(__file__).resolve().parents[1] / "crew.yaml")
    settings = getattr(config.roles, role)
    settings.model = "openai/local"
    settings.max_tokens = 1024
    return config


def _offline(role: str):
    from agents.crew.llm.offline import OfflineLLM

    return OfflineLLM()
