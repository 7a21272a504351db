"""crew.yaml: the crew's roles, models and loop settings, loaded into typed pydantic models.

Every mistake in the file becomes one `ConfigError` line naming the file (and line when known), the
field path (e.g. `roles.coder.model`) and what is allowed there, before any experiment starts.

A file may start from another with `extends: <path>` (relative to itself): mappings are merged key by
key, everything else is replaced. The presets use it so the roles' prose lives in crew.yaml only.
"""

from __future__ import annotations

import re
import string
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from agents.bench.guard import RULES as GUARD_RULE_TEXTS

ROLE_NAMES = ("hypothesis", "coder", "reviewer", "analyst")

# The text fields each role's task template may use as {placeholders} (ARCHITECTURE.md, "Roles").
ROLE_INPUTS: dict[str, tuple[str, ...]] = {
    "hypothesis": ("program", "train_py", "best", "recall", "feedback", "history", "device"),
    "coder": ("program", "idea", "train_py", "feedback"),
    "reviewer": ("program", "idea", "diff", "guard_report", "guard_ok", "similar"),
    "analyst": ("program", "idea", "record", "log_tail", "history"),
}

# Roles the loop can run without: the deterministic guard still checks every edit.
OPTIONAL_ROLES = ("reviewer",)

DEFAULT_KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}
# What `model: auto` becomes when that provider's key is set.
AUTO_MODELS = {"anthropic": "anthropic/claude-sonnet-4-5", "openai": "openai/gpt-4.1"}

MODEL_ALLOWED = "expected 'anthropic/<model>', 'openai/<model>', 'offline' or 'auto'"
FALLBACK_ALLOWED = "expected 'anthropic/<model>', 'openai/<model>' or 'offline'"
EMBEDDING_ALLOWED = "expected 'minilm' or 'openai/<model>'"
_PROVIDER_MODEL = re.compile(r"^(anthropic|openai)/[A-Za-z0-9][\w.:@/+-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# The project files `autoresearch init` copies, shipped inside the package (links to the repository's own files
# in a checkout, copies in an installed wheel), and the crew.yaml variants `--preset` names.
PROJECT_TEMPLATE_DIR = Path(__file__).resolve().parent / "project"
PRESETS_DIR = PROJECT_TEMPLATE_DIR / "presets"
PRESETS = ("full", "no-reviewer", "single-agent", "offline", "tpe", "cmaes", "centaur")


class ConfigError(ValueError):
    """A problem in crew.yaml, always one line: `<file>[:<line>]: <field>: <message>`."""

    def __init__(self, file: str | Path, field: str, message: str, line: int | None = None):
        self.file, self.field, self.message, self.line = str(file), field, message, line
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(" ".join(f"{where}: {field + ': ' if field else ''}{message}".split()))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def provider_of(model: str) -> str:
    """'anthropic/claude-x' -> 'anthropic'; 'offline' -> 'offline'."""
    return model.split("/", 1)[0]


def _check_model(value: str, allow_auto: bool) -> str:
    value = value.strip()
    if value == "offline" or (allow_auto and value == "auto") or _PROVIDER_MODEL.match(value):
        return value
    raise ValueError(MODEL_ALLOWED if allow_auto else FALLBACK_ALLOWED)


class LLMSettings(_Strict):
    """Which model answers, and how it is called."""

    model: str = "auto"
    base_url: str | None = None  # an OpenAI-compatible server (vLLM, Ollama, llama.cpp) for 'openai/<model>'
    api_key_env: str | None = None  # the variable holding the key, when not the provider's usual one
    fallback_model: str | None = None
    fallback_base_url: str | None = None
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=4096, gt=0)
    # seconds per request; None: 120 for a hosted API, 900 for a self-hosted server (a CPU can take minutes)
    timeout_s: float | None = Field(default=None, gt=0)
    # the SDK's retries of 429s, 5xx, timeouts and dropped connections; None: 3 for a hosted API, 1 for a
    # self-hosted server (a retried timeout queues a second copy of the prompt behind the first one)
    max_retries: int | None = Field(default=None, ge=0)
    # how structured output is asked for: auto picks by provider and, for a base_url server, by what it accepts
    structured: Literal["auto", "tool", "json_schema", "json_object", "prompt"] = "auto"
    # the model's context window in tokens; None: what the server reports, else a default per provider
    context_tokens: int | None = Field(default=None, ge=512)
    usd_per_mtok_in: float | None = Field(default=None, ge=0)
    usd_per_mtok_out: float | None = Field(default=None, ge=0)

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        return _check_model(value, allow_auto=True)

    @field_validator("fallback_model")
    @classmethod
    def _fallback(cls, value: str | None) -> str | None:
        return None if value is None else _check_model(value, allow_auto=False)

    @field_validator("base_url", "fallback_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("expected the NAME of an environment variable (letters, digits, '_'), not a key")
        return value

    @model_validator(mode="after")
    def _urls_and_forms_fit_the_provider(self) -> LLMSettings:
        if self.base_url and provider_of(self.model) not in DEFAULT_KEY_ENV:
            raise ValueError("base_url: applies only to model 'anthropic/<model>' or 'openai/<model>'")
        if self.fallback_base_url and provider_of(self.fallback_model or "") not in DEFAULT_KEY_ENV:
            raise ValueError("fallback_base_url: applies only to fallback_model 'anthropic/<model>' or 'openai/<model>'")
        if provider_of(self.model) == "anthropic" and self.structured in ("json_schema", "json_object"):
            raise ValueError(f"structured: anthropic models take auto, tool or prompt, not {self.structured}")
        return self


class TaskConfig(_Strict):
    description: str  # a template: {placeholders} are filled from the role's text inputs
    expected_output: str


class RoleConfig(LLMSettings):
    role: str
    goal: str
    backstory: str
    task: TaskConfig
    enabled: bool = True


class Roles(_Strict):
    hypothesis: RoleConfig
    coder: RoleConfig
    reviewer: RoleConfig
    analyst: RoleConfig

    @model_validator(mode="after")
    def _templates_and_enabled(self) -> Roles:
        for name in ROLE_NAMES:
            cfg: RoleConfig = getattr(self, name)
            if not cfg.enabled and name not in OPTIONAL_ROLES:
                raise ValueError(f"{name}.enabled: only {', '.join(OPTIONAL_ROLES)} may be disabled")
            unknown = sorted(set(template_fields(cfg.task.description, f"{name}.task.description"))
                             - set(ROLE_INPUTS[name]))
            if unknown:
                raise ValueError(f"{name}.task.description: unknown placeholder {{{unknown[0]}}}; "
                                 f"allowed: {', '.join('{' + k + '}' for k in ROLE_INPUTS[name])} "
                                 "(write {{ and }} for literal braces)")
        return self


class SingleAgentConfig(LLMSettings):
    """The one agent that plays every role when `mode: single-agent`."""

    role: str = "Autonomous ML researcher"
    goal: str = "Lower val_bpb of train.py within the fixed training budget, one careful experiment at a time."
    backstory: str = ("You run a small research lab alone: you propose experiments, write the code, review it "
                      "critically and explain the results.")


class NoiseConfig(_Strict):
    baseline_repeats: int = Field(default=3, ge=1)  # runs of the starting code, to estimate sigma
    min_delta: float = Field(default=0.0, ge=0)  # the smallest val_bpb gain worth keeping, besides the noise rule
    sigma_k: float = Field(default=2.0, gt=0)  # a gain must beat sigma_k * sigma of the baseline runs
    max_reruns: int = Field(default=1, ge=0)  # re-runs (other seeds) of a borderline or implausible result


class PlausibilityConfig(_Strict):
    val_bpb_floor: float = Field(default=0.3, gt=0)  # below this a result is not believed without a re-run
    max_gain: float = Field(default=0.1, gt=0)  # largest believable one-step gain, as a fraction of the best
    # A run whose wall time (evaluation excluded) exceeds the slowest baseline's by more than this fraction plus
    # wall_time_slack_s is quarantined as a possible budget stretch until a re-run respects the budget.
    wall_time_tolerance: float = Field(default=0.25, ge=0)
    wall_time_slack_s: float = Field(default=10.0, ge=0)


class LoopConfig(_Strict):
    time_budget: float | None = Field(default=None, gt=0)  # training seconds per run; None: prepare.py's default
    hard_timeout_s: float | None = Field(default=None, gt=0)  # kill a run after this; None: 2 x budget + 120 s
    max_experiments: int | None = Field(default=None, ge=1)
    max_hours: float | None = Field(default=None, gt=0)
    max_usd: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=1)
    # candidates started per trained experiment; past it the crew is not making progress and the run stops
    # (bounds every configuration; `max_refusals_in_a_row`, its earlier name, is still read)
    max_candidates_per_experiment: int = Field(
        default=20, ge=1, validation_alias=AliasChoices("max_candidates_per_experiment", "max_refusals_in_a_row"))
    # candidates in a row that stall for the same role's reason (its edits do not apply, its ideas repeat, ...)
    # before that role is given up as on_model_failure says (the offline policy plays it, or the run stops)
    max_stalled: int = Field(default=5, ge=1)
    noise: NoiseConfig = Field(default_factory=NoiseConfig)
    plausibility: PlausibilityConfig = Field(default_factory=PlausibilityConfig)
    # least idea similarity (cosine) at which a past experiment found by embedding is shown to the repeat judge;
    # experiments that change the same knobs or parts are looked up by their reading whatever their similarity
    novelty_threshold: float = Field(default=0.3, gt=0, le=1)
    pipelining: bool = True
    coder_retries: int = Field(default=2, ge=0)
    review_rounds: int = Field(default=2, ge=1)
    seed: int = 42


class ClusterConfig(_Strict):
    """Where training runs: this machine (workers 1, no Ray), or N workers on a Ray cluster."""

    workers: int | Literal["auto"] = 1  # experiments in flight; auto: one per GPU Ray sees
    address: str | None = None  # None: a local Ray instance for the run; 'auto' or 'ray://HOST:PORT' joins one
    cache: str | None = None  # a data cache directory every node sees at this path; None: each node's own

    @field_validator("workers")
    @classmethod
    def _workers(cls, value: int | str) -> int | str:
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError("expected a whole number of workers >= 1, or 'auto'")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^(auto|local|ray://[^\s/:]+:\d+|[^\s/:]+:\d+)$", value):
            raise ValueError("expected 'auto', 'ray://HOST:PORT' or HOST:PORT (a Ray head's GCS address)")
        return value


class MemoryConfig(_Strict):
    path: str = ".autoresearch/memory"  # relative to the repository; shared by every run there
    embedding: str = "minilm"
    # who judges whether an idea repeats a past experiment: null = the reviewer's model; "offline" = the structured
    # reading alone; or a model of its own (anthropic/..., openai/... with judge_base_url)
    judge_model: str | None = None
    judge_base_url: str | None = None

    @field_validator("judge_model")
    @classmethod
    def _judge_model(cls, value: str | None) -> str | None:
        return None if value is None else _check_model(value, allow_auto=False)

    @field_validator("judge_base_url")
    @classmethod
    def _judge_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://\S+$", value):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("embedding")
    @classmethod
    def _embedding(cls, value: str) -> str:
        if value == "minilm" or (value.startswith("openai/") and _PROVIDER_MODEL.match(value)):
            return value
        raise ValueError(EMBEDDING_ALLOWED)


SAMPLER_METHODS = ("tpe", "cmaes")
SAMPLER_ALLOWED = "expected 'tpe' or 'cmaes' (Optuna's samplers), or null for none"


class SamplerTurns(_Strict):
    """Who proposes, in a repeating cycle: `crew` ideas from the hypothesis role, then `sampler` trials."""

    crew: int = Field(default=0, ge=0)
    sampler: int = 1

    @field_validator("sampler")
    @classmethod
    def _some_turns(cls, value: int) -> int:
        if value < 1:
            raise ValueError("the sampler needs at least 1 turn per cycle (for none, leave out the sampler section)")
        return value


class SamplerConfig(_Strict):
    """A hyperparameter sampler (agents/crew/hpo.py) that proposes train.py's constants, all at once, per trial.

    `sampler: tpe` is short for `{method: tpe}`. Its trials go through the same gate, guard, reviewer, noise rule
    and budget as every idea; it needs the optional extra: pip install 'autoresearch-crew[hpo]'.
    """

    method: str
    turns: SamplerTurns = Field(default_factory=SamplerTurns)
    # near: the offline policy's local steps around each constant's value when the study starts (a learning rate
    # within a factor of 4); wide: its outer bounds (a factor of 16)
    box: Literal["near", "wide"] = "near"
    # trials drawn at random before the sampler models the results (TPE); null: Optuna's default (10 for TPE, none
    # for CMA-ES, which starts at train.py's values)
    startup_trials: int | None = Field(default=None, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"method": value}
        if not isinstance(value, dict | BaseModel):
            raise ValueError(f"{SAMPLER_ALLOWED}, or a mapping like {{method: tpe, turns: {{crew: 1, sampler: 3}}}}")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in SAMPLER_METHODS:
            raise ValueError(f"unknown sampler {value!r}; {SAMPLER_ALLOWED}")
        return value


# an MLflow tracking URI: a scheme (sqlite:///, file:///, http(s)://, postgresql://, ...) or `databricks`
_TRACKING_URI = re.compile(r"^([a-z][a-z0-9+.-]*://\S+|databricks(://\S*)?)$")
TRACKING_ALLOWED = ("expected 'off', or a mapping like {uri: sqlite:///path/to/mlflow.db} "
                    "(also file:///DIR, http(s)://HOST:PORT, postgresql://...)")


class TrackingConfig(_Strict):
    """Where experiments are logged in MLflow (agents/record/tracking.py); `tracking: off` turns it off."""

    enabled: bool = True
    uri: str | None = None  # None: MLFLOW_TRACKING_URI, else a SQLite file under .autoresearch/

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # YAML reads a bare `off` as False
        if value is False or (isinstance(value, str) and value.strip().lower() in ("off", "false", "no")):
            return {"enabled": False}
        if value is True or value is None or (isinstance(value, str) and value.strip().lower() in ("on", "true")):
            return {}
        if isinstance(value, str):
            return {"uri": value}
        if not isinstance(value, dict | BaseModel):
            raise ValueError(TRACKING_ALLOWED)
        return value

    @field_validator("uri")
    @classmethod
    def _uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not _TRACKING_URI.match(value):
            raise ValueError(f"{value!r} is not a tracking URI; {TRACKING_ALLOWED}")
        return value


class _GuardToggles(_Strict):
    def enabled_rules(self) -> set[str]:
        """The enabled rules, by the guard's own names (`no-patching`)."""
        return {name.replace("_", "-") for name, on in self.model_dump().items() if on}


# One switch per rule of the deterministic reviewer (agents/bench/guard/report.py owns the list), all on by default.
# YAML keys use underscores: `no_patching: false`.
GuardConfig = create_model(
    "GuardConfig", __base__=_GuardToggles, **{name.replace("-", "_"): (bool, True) for name in GUARD_RULE_TEXTS})
GUARD_RULES = tuple(GUARD_RULE_TEXTS)


class CrewConfig(_Strict):
    name: str
    mode: Literal["crew", "single-agent"] = "crew"
    degrade_after: int = Field(default=3, ge=1)  # consecutive failures before a model is given up for the run
    # when a role has given up every model: `offline` plays it with the offline policy (announced), `stop` ends
    # the run (`autoresearch run --strict`)
    on_model_failure: Literal["stop", "offline"] = "offline"
    # LLM calls in flight at once, per provider (anthropic, openai, or a base_url server): one number for every
    # provider, or a mapping {provider or base_url: number}; null: 4 per hosted API, 1 per self-hosted server
    # (base_url). The offline policy always answers one at a time
    max_concurrent_calls: int | dict[str, int] | None = None
    roles: Roles
    single_agent: SingleAgentConfig = Field(default_factory=SingleAgentConfig)
    loop: LoopConfig = Field(default_factory=LoopConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    # the OS sandbox train.py runs in (agents/bench/sandbox/): auto takes the strongest that starts here
    sandbox: Literal["auto", "bwrap", "landlock", "none"] = "auto"
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    # a hyperparameter sampler taking some or all of the hypothesis role's turns (presets tpe, cmaes, centaur)
    sampler: SamplerConfig | None = None

    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> str:
        return str(self._source) if self._source else "crew.yaml"

    def role(self, name: str) -> RoleConfig:
        return getattr(self.roles, name)

    @field_validator("max_concurrent_calls")
    @classmethod
    def _concurrency(cls, value: int | dict[str, int] | None) -> int | dict[str, int] | None:
        numbers = [] if value is None else value.values() if isinstance(value, dict) else [value]
        if any(isinstance(n, bool) or n < 1 for n in numbers):
            raise ValueError("expected a number of calls >= 1 (or a mapping of provider or base_url to one)")
        return value

    def concurrent_calls(self, provider: str, base_url: str | None = None) -> int:
        """How many calls to one provider (or OpenAI-compatible server) may be in flight at once."""
        # a self-hosted server often answers one request at a time: more calls would only queue there and time out
        default = 1 if base_url else 4
        limit = self.max_concurrent_calls
        if limit is None:
            return default
        if isinstance(limit, int):
            return limit
        return limit.get(base_url or "", limit.get(provider, default))

    def llm_settings(self, role: str) -> LLMSettings:
        """The model settings that answer for `role`: its own, or the single agent's."""
        return self.single_agent if self.mode == "single-agent" else self.role(role)


def template_fields(template: str, where: str = "template") -> list[str]:
    """The {placeholder} names in a task template; ValueError on unbalanced braces or format specs."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc} (write {{{{ and }}}} for literal braces)") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"{where}: placeholder {{{name}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} must be a plain name like {{train_py}}")
        names.append(name)
    return names


# ---------------------------------------------------------------------------------------------- loading


def load_config(path: Path) -> CrewConfig:
    """Read, merge (`extends`) and validate a crew.yaml; any problem raises a one-line `ConfigError`."""
    path = Path(path)
    data, layers = _read_with_extends(path, seen=())
    try:
        config = CrewConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(path, layers, exc) from None
    config._source = path
    return config


def _read_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read it ({exc.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(path, "", f"YAML syntax error: {problem}", line=mark.line + 1 if mark else None) from None
    _reject_duplicate_keys(path, node, ())
    return data, node


def _reject_duplicate_keys(path: Path, node: yaml.Node | None, loc: tuple[str, ...]) -> None:
    """YAML lets a later key silently replace an earlier one; in a config that hides mistakes."""
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(path, item, loc)
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key, value in node.value:
        name = str(key.value)
        if name in seen:
            raise ConfigError(path, ".".join(loc + (name,)), "key appears twice in the same mapping",
                              line=key.start_mark.line + 1)
        seen.add(name)
        _reject_duplicate_keys(path, value, loc + (name,))


def _read_with_extends(path: Path, seen: tuple[Path, ...]) -> tuple[dict, list[tuple[Path, yaml.Node | None]]]:
    """The merged mapping, and the files it came from (this one first) for locating errors."""
    resolved = path.resolve()
    if resolved in seen:
        raise ConfigError(path, "extends", "circular 'extends' chain")
    data, node = _read_yaml(path)
    if data is None:
        raise ConfigError(path, "", "the file is empty; expected a mapping with 'name' and 'roles'")
    if not isinstance(data, dict):
        raise ConfigError(path, "", f"expected a mapping at the top level, got {type(data).__name__}")
    layers = [(path, node)]
    base_ref = data.pop("extends", None)
    if base_ref is None:
        return data, layers
    if not isinstance(base_ref, str):
        raise ConfigError(path, "extends", "expected a path to another crew.yaml", line=_line_of(node, ("extends",)))
    base_path = path.parent / base_ref  # an absolute base_ref stays absolute
    if not base_path.is_file():
        raise ConfigError(path, "extends", f"{base_ref!r} not found (looked for {base_path})",
                          line=_line_of(node, ("extends",)))
    base, base_layers = _read_with_extends(base_path, seen + (resolved,))
    return _deep_merge(base, data), layers + base_layers


def _deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The 1-based line of the key at `loc` in a composed YAML tree, or of its deepest existing parent."""
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
        if match is None:
            break
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def _config_error(path: Path, layers: list[tuple[Path, yaml.Node | None]], exc: ValidationError) -> ConfigError:
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = tuple(err["loc"])
    message = _describe(err, loc)
    # a field path inside a model validator's message ("coder.task.description: ...") is the real location
    nested = re.match(r"^([a-z_]+(?:\.[a-z_]+)*): (.*)$", message)
    if err["type"] == "value_error" and nested:
        loc, message = loc + tuple(nested.group(1).split(".")), nested.group(2)
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    field = ".".join(str(part) for part in loc)
    # the file that spells out the deepest part of this path is the one to fix
    best = max(layers, key=lambda layer: _depth_found(layer[1], loc))
    file = best[0] if _depth_found(best[1], loc) else path
    return ConfigError(file, field, message, line=_line_of(best[1], loc))


def _depth_found(node: yaml.Node | None, loc: tuple) -> int:
    depth = 0
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        match = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(key)), None)
        if match is None:
            break
        depth, node = depth + 1, match
    return depth


def _describe(err: Mapping[str, Any], loc: tuple) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        return f"unknown key; allowed here: {', '.join(allowed)}" if allowed else "unknown key"
    if kind == "missing":
        if len(loc) == 2 and loc[0] == "roles":
            return f"role is missing; crew.yaml needs all of: {', '.join(ROLE_NAMES)}"
        return "required key is missing"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{err['msg']} (got {shown})"


def _allowed_keys(loc: tuple) -> list[str]:
    """The field names of the model found at `loc` inside CrewConfig."""
    model: type[BaseModel] = CrewConfig
    for key in loc:
        field = model.model_fields.get(str(key))
        annotation = field.annotation if field else None
        # an optional section (`X | None`) lists X's keys
        annotation = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


# ---------------------------------------------------------------------------------------------- models and keys


def resolve_model(role_cfg: LLMSettings, env: Mapping[str, str]) -> str:
    """The concrete model for a role: `auto` becomes anthropic, else openai, else offline, by which key is set."""
    if role_cfg.model != "auto":
        return role_cfg.model
    for provider in ("anthropic", "openai"):
        if env.get(DEFAULT_KEY_ENV[provider]):
            return AUTO_MODELS[provider]
    return "offline"


def key_env_for(model: str, settings: LLMSettings, base_url: str | None) -> str | None:
    """The environment variable a model's key must come from, or None when it needs none.

    A local OpenAI-compatible server (base_url) usually takes no key, so one is only required there when
    `api_key_env` names it. `api_key_env` applies to the fallback too when both use the same provider.
    """
    provider = provider_of(model)
    if provider not in DEFAULT_KEY_ENV:
        return None
    same_provider_as_primary = provider == provider_of(settings.model)
    if settings.api_key_env and same_provider_as_primary:
        return settings.api_key_env
    if base_url:
        return None
    return DEFAULT_KEY_ENV[provider]


def check_keys(config: CrewConfig, env: Mapping[str, str]) -> None:
    """Fail before the run if a provider named explicitly has no key. Names the variable, never its value."""
    where = ["single_agent"] if config.mode == "single-agent" else [
        f"roles.{name}" for name in ROLE_NAMES if config.role(name).enabled]
    for prefix in where:
        settings = config.single_agent if prefix == "single_agent" else config.role(prefix.split(".")[1])
        candidates = [("model", resolve_model(settings, env), settings.base_url),
                      ("fallback_model", settings.fallback_model, settings.fallback_base_url)]
        for field, model, base_url in candidates:
            if not model:
                continue
            var = key_env_for(model, settings, base_url)
            if var and not env.get(var):
                raise ConfigError(config.source, f"{prefix}.{field}",
                                  f"'{model}' needs an API key in the environment variable {var}, which is not set; "
                                  "set it, or use 'auto' or 'offline'")


def preset_path(name: str) -> Path:
    """The crew.yaml variant shipped under presets/ for `name` (one of PRESETS)."""
    if name not in PRESETS:
        raise ConfigError(PRESETS_DIR, "preset", f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS_DIR / f"{name}.yaml"
