"""Against a real local model server, when one is named: AUTORESEARCH_TEST_SERVER_URL=http://127.0.0.1:8000/v1.

A manual check (a model on a CPU takes minutes per call), skipped in CI: one structured call through the real
adapter, which must find a form the server accepts and return a valid object, with nothing given up silently.
"""

from __future__ import annotations

import os

import pytest

from agents.crew.llm import UsageLedger, make_llm
from agents.crew.schemas import Review

URL = os.environ.get("AUTORESEARCH_TEST_SERVER_URL", "")


@pytest.mark.skipif(not URL, reason="no model server named in AUTORESEARCH_TEST_SERVER_URL")
def test_a_real_server_answers_a_valid_review():
    ledger = UsageLedger()
    llm = make_llm("openai/local", role="reviewer", ledger=ledger, base_url=URL, max_tokens=256)
    review = llm.call("Review this one-line diff of train.py: -DEPTH = 2 +DEPTH = 3. Answer in JSON.",
                      response_model=Review)
    assert isinstance(review, Review)
    assert llm.current_mode() in ("json_schema", "json_object", "prompt")
    refused = [n.message for n in ledger.faults.notices]
    assert all("refused structured output" in m for m in refused)  # every fallback was announced, nothing else
