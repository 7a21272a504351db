"""Keep CrewAI quiet and offline-safe.

CrewAI phones home for telemetry, tracing and version checks; with no network every process exit
then stalls for about ten seconds. These must be set before `import crewai`.
"""

import os

_QUIET = {
    "CREWAI_DISABLE_TELEMETRY": "true",
    "CREWAI_TRACING_ENABLED": "false",
    "CREWAI_DISABLE_VERSION_CHECK": "true",
    "OTEL_SDK_DISABLED": "true",
}


def quiet_crewai() -> None:
    """Switch off CrewAI telemetry, tracing and version checks (call before importing crewai)."""
    for key, value in _QUIET.items():
        os.environ.setdefault(key, value)
