"""Shared test setup: quiet CrewAI, the repository on sys.path, and one small prepared cache per session."""

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# CrewAI phones home (telemetry, tracing, version checks) unless told not to before it is imported.
for _name, _value in {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "OTEL_SDK_DISABLED": "true",
}.items():
    os.environ.setdefault(_name, _value)

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # prepare.py and train.py are top-level modules, not an installed package
    sys.path.insert(0, str(REPO))

TEST_CORPUS_MB = 2.0  # enough text for the 8192-token BPE; builds in about a second


@pytest.fixture(scope="session")
def prepared_cache(tmp_path_factory) -> Iterator[Path]:
    """A small builtin cache (data + tokenizer), built once; AUTORESEARCH_CACHE points at it for the session."""
    import prepare

    root = tmp_path_factory.mktemp("autoresearch-cache")
    previous = os.environ.get("AUTORESEARCH_CACHE")
    os.environ["AUTORESEARCH_CACHE"] = str(root)
    prepare.run_prepare("builtin", builtin_mb=TEST_CORPUS_MB, cache_dir=root)
    yield root
    if previous is None:
        os.environ.pop("AUTORESEARCH_CACHE", None)
    else:
        os.environ["AUTORESEARCH_CACHE"] = previous


@pytest.fixture
def anthropic_env(monkeypatch):
    """Point the real anthropic SDK at a ScriptedLLMServer (tests/llm_server.py) with a fake key."""

    def point_at(server) -> None:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-key-never-logged")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url_anthropic)
    return point_at
