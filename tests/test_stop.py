"""The stop switch: after a stop is asked for, no request leaves and no call counts as a failure."""

from __future__ import annotations

import pytest

from agents import stop
from agents.crew.llm import UsageLedger, make_llm
from agents.crew.schemas import Idea
from tests.llm_server import Reply, ScriptedLLMServer


@pytest.fixture
def switch():
    stop.SWITCH.reset()
    yield stop.SWITCH
    stop.SWITCH.reset()


def test_no_request_leaves_after_a_stop_not_even_a_retry(switch, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")

    def stop_while_answering(request):  # a malformed reply: its retry would be a new request, after the stop
        switch.request("Ctrl-C pressed")
        return Reply.json({"title": "x"})

    with ScriptedLLMServer(stop_while_answering) as server:
        llm = make_llm("openai/local", role="hypothesis", ledger=UsageLedger(), base_url=server.base_url_openai,
                       timeout_s=5.0, max_retries=2, output_retries=2, structured="json_schema",
                       api_key_env="OPENAI_API_KEY")
        with pytest.raises(stop.StopRequested, match="Ctrl-C pressed"):
            llm.call("Propose.", response_model=Idea)
        assert len(server.requests) == 1


def test_a_stopped_role_is_not_a_model_failure(switch, tmp_path, monkeypatch):
    from agents.assemble import build_settings
    from tests.toyrepo import make_toy_repo

    config = make_toy_repo(tmp_path / "repo")
    settings = build_settings(tmp_path / "repo", config, "t1")
    try:
        switch.request("Ctrl-C pressed")
        with pytest.raises(stop.StopRequested):
            settings.crew.propose({"train_py": "", "best": "", "recall": "", "feedback": "", "history": [],
                                   "device": "cpu"})
        assert settings.crew.degradations == {}
    finally:
        settings.memory.close()


def test_a_second_signal_inside_a_critical_write_waits_for_its_end(switch):
    import os
    import signal
    import threading

    lines = []
    timers_before = threading.active_count()
    with switch.on_signals(lines.append):
        os.kill(os.getpid(), signal.SIGINT)
        assert switch.stopping and lines and lines[0].startswith("stopping: Ctrl-C")
        with pytest.raises(KeyboardInterrupt):
            with switch.critical():
                os.kill(os.getpid(), signal.SIGINT)  # lands inside: takes effect at the block's end
                written = True
        assert written
        for timer in [t for t in threading.enumerate() if isinstance(t, threading.Timer)]:
            timer.cancel()  # the watchdog would end the test process
    assert threading.active_count() <= timers_before + 1
