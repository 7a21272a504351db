"""Many preparing threads against the scripted server with faults: nothing escapes, every candidate is accounted.

The repeat-heavy version is `benchmarks/prepare_stress.py` (figures in its output); this runs it once, small.
A failure inside one preparation would be that candidate's `error` record, named, never a crash that escapes;
and there are none: every parse of train.py (CPython 3.11's `ast.parse` races when several threads parse at once)
happens once per version under `agents.trainpy`'s lock, so a harness error here is a bug.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # about a minute of concurrent preparations


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_concurrent_preparations_with_faults_never_crash(tmp_path, protocol, monkeypatch):
    from benchmarks.prepare_stress import stress_once

    monkeypatch.setenv("OPENAI_API_KEY", "sk-stress")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-stress")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")  # the run points it at its own server
    result = stress_once(tmp_path, threads=12, candidates=36, fault_rate=0.3, seed=7, protocol=protocol)
    assert result["crashes"] == [], result["crashes"][0]
    assert result["candidates"] == 36 and sum(result["outcomes"].values()) == 36
    assert result["harness_errors"] == [], result["harness_errors"][:3]
    assert result["outcomes"].get("harness error", 0) == result["error_records"] == 0
    assert result["outcomes"].get("prepared", 0) >= 12, result["outcomes"]
    assert sum(result["faults_injected"].values()) >= 10
    survived = {kind for counts in result["faults_survived"].values() for kind in counts}
    assert {"malformed", "retries"} <= survived, result["faults_survived"]
