"""Placeholder replies are malformed replies: read from the schema, retried and counted like any other."""

from __future__ import annotations

import pytest

from agents.crew.llm import UsageLedger, make_llm
from agents.crew.llm.structured import validate_output
from agents.crew.replies import placeholder_problem
from agents.crew.schemas import Analysis, CodeEdit, Idea, Review
from tests.llm_server import Reply, ScriptedLLMServer

GOOD = {"title": "MATRIX_LR 0.04 -> 0.03", "rationale": "The loss curve is noisy late in training at this rate.",
        "expected_effect": "val_bpb drops by about 0.002.", "category": "learning_rate"}


def idea(**fields) -> Idea:
    return Idea(**{**GOOD, **fields})


@pytest.mark.parametrize("title", [
    # the schema's own description copied back, with a few words added (seen from a 135M model)
    "One line naming the change, e.g. 'MATRIX_LR 0.04 -> 0.03', but with a clear explanation …",
    "Explanation", "EXPLANATION", "<title>", "[Title]", "expected_effect", "Lesson", "Idea",  # field / schema names
    "string", "str", "…", "...", "---", "?", "   ",
])
def test_a_title_that_fills_in_the_form_is_a_placeholder(title):
    problem = placeholder_problem(idea(title=title))
    assert problem.startswith("title "), problem


@pytest.mark.parametrize("fields", [
    GOOD,
    {"title": "MATRIX_LR 0.04 -> 0.03"},  # the description's own example is a real idea
    {"title": "Warm up the learning rate for the first 5% of steps"},
    {"title": "Explain less, train more: halve EVAL_EVERY"},
    {"rationale": "A lower LR should lower val_bpb within the fixed budget because late steps overshoot."},
    {"expected_effect": "string lengths do not matter here; val_bpb 0.002 lower"},
    {"retry_of": "none"},
])
def test_real_answers_pass(fields):
    assert placeholder_problem(idea(**fields)) == ""


def test_every_role_and_nested_field_is_checked_but_code_is_taken_as_it_is():
    assert "explanation" in placeholder_problem(Analysis(explanation="Explanation", lesson="lower LR helps"))
    assert "reasons[1]" in placeholder_problem(Review(verdict="approve", reasons=["clear", "string"]))
    assert "blocks[0].search" not in placeholder_problem(
        CodeEdit(blocks=[{"search": "DEPTH = 2", "replace": ""}]))  # an empty replace deletes: not a placeholder
    assert placeholder_problem(CodeEdit(path="string", blocks=[{"search": "x", "replace": "y"}])).startswith("path")
    assert placeholder_problem(CodeEdit(blocks=[{"search": "x", "replace": "y"}], summary="")) == ""  # optional


def test_a_declared_value_is_python_taken_as_it_is_but_its_technique_is_checked():
    from agents.crew.idea_schema import idea_schema

    schema = idea_schema("DEPTH = 2\nWINDOW = 128\n\ndef mlp(x):\n    return x\n")
    unset = schema(**GOOD, changes=[{"constant": "WINDOW", "value": "None"}])  # None is a value, not "null"
    assert placeholder_problem(unset) == ""
    swapped = schema(**GOOD, changes=[{"part": "mlp", "technique": "string"}])
    assert placeholder_problem(swapped).startswith("changes[0].technique"), placeholder_problem(swapped)


def test_validate_output_names_the_placeholder():
    value, problem = validate_output(Idea, data={**GOOD, "title": "Explanation"})
    assert value is None and "title is a placeholder" in problem
    value, problem = validate_output(Idea, data=GOOD)
    assert value == Idea(**GOOD) and problem == ""


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
def test_a_title_that_echoes_the_schema_is_retried_and_counted(protocol, monkeypatch):
    echo = {**GOOD, "title": Idea.model_fields["title"].description + " with a clear explanation"}
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedLLMServer([Reply.json(echo), Reply.json({**GOOD, "title": "Explanation"}), Reply.json(GOOD)]) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url_anthropic)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url_openai)
        ledger = UsageLedger()
        model = {"anthropic": "anthropic/claude-sonnet-4-5", "openai": "openai/gpt-4.1-mini"}[protocol]
        llm = make_llm(model, role="hypothesis", ledger=ledger, timeout_s=5.0, max_retries=0, output_retries=2,
                       api_key_env=f"{protocol.upper()}_API_KEY")
        got = llm.call("Propose.", response_model=Idea)
        assert got == Idea(**GOOD)
        assert len(server.requests) == 3
        assert "copies the schema's description" in server.requests[1].last_user_text
        assert "field name 'Explanation'" in server.requests[2].last_user_text
    assert ledger.faults.by_role() == {"hypothesis": {"malformed": 2, "retries": 2}}
