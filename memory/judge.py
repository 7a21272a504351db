"""The LLM repeat judge: one structured call that names the past experiment an idea repeats, or none.

The judge is the reviewer's model unless crew.yaml names another (`memory.judge_model`), built through the
crew's own provider adapters (agents.crew.llm.make_llm), metered by the run's ledger under role "judge".
It is shown the idea and the candidate experiments with their fingerprints (what the code changed) and
outcomes, and answers `{same_as, reason}`. An answer naming no candidate, or a failed call, leaves the
decision to the structure (memory.gate), and the verdict says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from agents.crew.prompts import describe_changes
from agents.crew.schemas import Idea
from memory.gate import JudgeUnavailable
from memory.records import MemoryHit

JUDGE_MAX_TOKENS = 400
INSTRUCTIONS = """You decide whether a proposed experiment on train.py repeats one already tried.
The same experiment means the same change: the same knobs or parts set to the same values, however it is
worded (code names or descriptions, numbers in words, "halve it", "start decaying at 40%" = a warmdown of 0.6).
It is a different experiment when it changes another knob or another part, uses another value or direction,
another variant of a technique (GELU vs SwiGLU, tanh softcap 30 vs no softcap), swaps the roles of two parts,
or names a value where the other names none. A re-proposal of a crashed experiment with its bug fixed is the
same experiment. When unsure, answer null: a missed repeat costs one run, a wrong refusal loses an experiment.
Answer with same_as = the id of the repeated experiment (exactly as given) or null, and a one-sentence reason."""


class JudgeAnswer(BaseModel):
    same_as: str | None = Field(default=None, description="Id of the past experiment this idea repeats, or null.")
    reason: str = Field(description="One sentence: why it is the same experiment, or how it differs.")


def describe_candidate(hit: MemoryHit) -> str:
    outcome = hit.status + (f", val_bpb {hit.val_bpb:.4f}" if hit.val_bpb is not None else "") + \
        (f", delta {hit.delta:+.4f}" if hit.delta is not None else "")
    lines = [f"id: {hit.id}", f"idea: {hit.title}"]
    if hit.rationale:
        lines.append(f"rationale: {hit.rationale[:300]}")
    change = hit.describe_change()
    if change:
        lines.append(f"what the code changed: {change}")
    lines.append(f"outcome: {outcome}" + (f"; lesson: {hit.lesson[:200]}" if hit.lesson else ""))
    return "\n".join(lines)


def judge_prompt(idea: Idea, candidates: Sequence[MemoryHit]) -> str:
    shown = "\n\n".join(describe_candidate(h) for h in candidates)
    declared = f"\nits changes: {describe_changes(idea.changes)}" if idea.changes else ""
    return (f"{INSTRUCTIONS}\n\n# Proposed experiment\ntitle: {idea.title}\nrationale: {idea.rationale}{declared}\n\n"
            f"# Past experiments\n{shown}")


class LLMJudge:
    """Asks one LLM (any `BaseLLM` of the crew's adapters) for a structured `JudgeAnswer`."""

    def __init__(self, llm: Any, name: str = ""):
        self.llm = llm
        self.name = name or f"llm {getattr(llm, 'model', 'judge')}"

    def decide(self, idea: Idea, candidates: Sequence[MemoryHit]) -> tuple[str | None, str]:
        messages = [{"role": "user", "content": judge_prompt(idea, candidates)}]
        try:
            answer = self.llm.call(messages, response_model=JudgeAnswer)
            if not isinstance(answer, JudgeAnswer):
                answer = JudgeAnswer.model_validate_json(str(answer))
        except Exception as exc:  # a provider error or unusable output: the structure decides
            raise JudgeUnavailable(" ".join(f"{type(exc).__name__}: {exc}".split())[:300]) from None
        ids = {h.id: h.id for h in candidates} | {h.exp_id: h.id for h in candidates}
        if answer.same_as and answer.same_as.strip() not in ids:
            raise JudgeUnavailable(f"it named {answer.same_as!r}, which is none of the experiments shown")
        same = ids[answer.same_as.strip()] if answer.same_as else None
        return same, " ".join(answer.reason.split())[:300]


def judge_for_crew(crew: Any) -> LLMJudge | None:
    """The judge a crew's configuration asks for, or None for the structure alone (offline models)."""
    from agents.config import key_env_for, resolve_model

    config = crew.config
    settings = config.llm_settings("reviewer")
    chosen = config.memory.judge_model
    model = chosen or resolve_model(settings, os.environ)
    if model == "offline":
        return None
    base_url = config.memory.judge_base_url if chosen else settings.base_url
    from agents.crew.llm import make_llm

    llm = make_llm(model, role="judge", ledger=crew.ledger, base_url=base_url,
                   api_key_env=key_env_for(model, settings, base_url), temperature=0.0,
                   max_tokens=JUDGE_MAX_TOKENS, timeout_s=settings.timeout_s, max_retries=settings.max_retries,
                   usd_per_mtok_in=settings.usd_per_mtok_in if not chosen else None,
                   usd_per_mtok_out=settings.usd_per_mtok_out if not chosen else None)
    return LLMJudge(llm, f"llm {model}")
