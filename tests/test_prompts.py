"""Prompts that fit: fixed inputs whole, elastic ones cut oldest (or least relevant) first with a summary."""

from __future__ import annotations

import pytest

from agents.crew.llm.tokens import count_tokens
from agents.crew.prompts import PromptTooLarge, fill_template, fit_template
from agents.record.results import ExperimentRecord

TEMPLATE = ("# Research program\n{program}\n\n# Recall\n{recall}\n\n# History\n{history}\n\n# Feedback\n{feedback}\n\n"
            "# train.py\n{train_py}\n\n{best} {device}")
TRAIN_PY = "\n".join(f"SETTING_{i} = {i}  # keep me" for i in range(30))


def _history(n: int) -> list[ExperimentRecord]:
    return [ExperimentRecord(exp_id=f"{i:04d}", tag="t", status="keep" if i % 5 == 0 else "discard",
                             description=f"idea {i} with several words of description", val_bpb=1.5 - i / 100,
                             lesson="a lesson of a sentence") for i in range(n)]


def _inputs(**overrides) -> dict:
    return {"program": "# Research program\nLower val_bpb.", "recall": "\n".join(f"recall line {i}" for i in range(40)),
            "history": _history(15), "feedback": "\n".join(f"feedback {i}" for i in range(10)),
            "train_py": TRAIN_PY, "best": "best 1.0", "device": "cpu", **overrides}


def test_everything_fits_whole_when_the_budget_allows():
    whole = fill_template("hypothesis", TEMPLATE, _inputs())
    fitted = fit_template("hypothesis", TEMPLATE, _inputs(), budget=10_000, count=count_tokens)
    assert fitted.text == whole and fitted.cuts == []
    assert whole.count("# Research program") == 1  # program.md's own heading is dropped, the template's kept


def test_history_goes_first_oldest_first_with_a_summary_then_recall_from_the_bottom():
    whole = count_tokens(fill_template("hypothesis", TEMPLATE, _inputs()))
    fitted = fit_template("hypothesis", TEMPLATE, _inputs(), budget=whole - 150, count=count_tokens)
    assert count_tokens(fitted.text) <= whole - 150
    assert TRAIN_PY in fitted.text and "recall line 39" in fitted.text  # recall untouched while history gives way
    assert "0014 discard" in fitted.text and "0000 keep" not in fitted.text  # newest kept, oldest cut
    assert "earlier experiments not shown" in fitted.text and "keep" in fitted.text.split("not shown:")[1]

    from agents.crew.prompts import as_text

    # more than the whole history must go: recall loses its last (least relevant) lines next
    budget = whole - count_tokens(as_text(_history(15))) - 40
    tight = fit_template("hypothesis", TEMPLATE, _inputs(), budget=budget, count=count_tokens)
    assert TRAIN_PY in tight.text and "recall line 0" in tight.text and "recall line 39" not in tight.text
    assert "more lines not shown" in tight.text
    assert [c.split(":")[0] for c in tight.cuts] == ["history", "recall"]  # feedback, the newest, untouched


def test_fixed_inputs_never_cut_an_impossible_budget_is_a_clear_error():
    with pytest.raises(PromptTooLarge, match="train.py, the program"):
        fit_template("hypothesis", TEMPLATE, _inputs(), budget=count_tokens(TRAIN_PY) // 2, count=count_tokens)


def test_feedback_keeps_its_newest_lines():
    template = "{idea}\n{feedback}\n{train_py}\n{program}"
    inputs = {"idea": "x", "feedback": "\n".join(f"attempt {i} failed" for i in range(50)), "train_py": TRAIN_PY,
              "program": "p"}
    whole = count_tokens(fill_template("coder", template, inputs))
    fitted = fit_template("coder", template, inputs, budget=whole - 100, count=count_tokens)
    assert "attempt 49 failed" in fitted.text and "attempt 0 failed" not in fitted.text
    assert "earlier lines not shown" in fitted.text
