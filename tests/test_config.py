"""crew.yaml loading: the shipped files load, and every kind of mistake is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from agents.config import (
    AUTO_MODELS,
    GUARD_RULES,
    PRESETS,
    ROLE_NAMES,
    ConfigError,
    check_keys,
    load_config,
    preset_path,
    resolve_model,
)

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "crew.yaml"


def _write(tmp_path: Path, data: dict, name: str = "crew.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture()
def base() -> dict:
    """The shipped crew.yaml as a dict, to break one thing at a time."""
    return yaml.safe_load(SHIPPED.read_text())


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, "a config error must be one line"
    assert message.startswith(str(path)), f"the message must name the file first: {message}"
    return message


# ---------------------------------------------------------------------------------------------- shipped files


def test_shipped_crew_yaml_loads_with_all_roles():
    config = load_config(SHIPPED)
    assert config.mode == "crew"
    for name in ROLE_NAMES:
        role = config.role(name)
        assert role.enabled and role.model == "auto"
        assert role.task.description.strip() and role.task.expected_output.strip()
    assert config.guard.enabled_rules() == set(GUARD_RULES)
    assert config.loop.noise.sigma_k == 2
    assert config.memory.path == ".autoresearch/memory" and config.memory.embedding == "minilm"


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads(name):
    config = load_config(preset_path(name))
    assert config.name == name


def test_presets_differ_as_documented():
    assert not load_config(preset_path("no-reviewer")).roles.reviewer.enabled
    assert load_config(preset_path("single-agent")).mode == "single-agent"
    offline = load_config(preset_path("offline"))
    assert {offline.role(n).model for n in ROLE_NAMES} == {"offline"}
    full = load_config(preset_path("full"))
    assert all(full.role(n).enabled and full.role(n).model == "auto" for n in ROLE_NAMES)
    # presets extend crew.yaml: the roles' prose is written once
    assert full.roles.coder.task.description == load_config(SHIPPED).roles.coder.task.description


def test_unknown_preset_lists_the_valid_names():
    with pytest.raises(ConfigError) as info:
        preset_path("turbo")
    message = str(info.value)
    assert "turbo" in message and all(name in message for name in PRESETS)


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_key_names_field_and_allowed_keys(tmp_path, base):
    base["loop"]["sede"] = 1
    message = _error(_write(tmp_path, base))
    assert "loop.sede" in message and "unknown key" in message
    assert "seed" in message and "time_budget" in message  # what is allowed there


def test_unknown_key_in_a_role(tmp_path, base):
    base["roles"]["coder"]["temprature"] = 0.1
    message = _error(_write(tmp_path, base))
    assert "roles.coder.temprature" in message and "temperature" in message


def test_missing_role(tmp_path, base):
    del base["roles"]["reviewer"]
    message = _error(_write(tmp_path, base))
    assert "roles.reviewer" in message and "missing" in message
    assert all(name in message for name in ROLE_NAMES)


@pytest.mark.parametrize("model", ["gpt-4", "anthropic/", "claude/sonnet", "Offline", "openai/ gpt"])
def test_malformed_model_string(tmp_path, base, model):
    base["roles"]["coder"]["model"] = model
    message = _error(_write(tmp_path, base))
    assert "roles.coder.model" in message
    assert "expected 'anthropic/<model>', 'openai/<model>', 'offline' or 'auto'" in message


def test_fallback_model_may_not_be_auto(tmp_path, base):
    base["roles"]["analyst"]["fallback_model"] = "auto"
    message = _error(_write(tmp_path, base))
    assert "roles.analyst.fallback_model" in message and "'offline'" in message


def test_bad_type_names_field_and_value(tmp_path, base):
    base["loop"]["review_rounds"] = "two"
    message = _error(_write(tmp_path, base))
    assert "loop.review_rounds" in message and "integer" in message and "'two'" in message


def test_out_of_range_value(tmp_path, base):
    base["roles"]["hypothesis"]["temperature"] = 5
    message = _error(_write(tmp_path, base))
    assert "roles.hypothesis.temperature" in message and "2" in message


def test_error_gives_the_line(tmp_path):
    text = SHIPPED.read_text().replace("  seed: 42", "  seed: forty-two")
    path = tmp_path / "crew.yaml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "forty-two" in row)
    assert _error(path).startswith(f"{path}:{line}: loop.seed:")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    text = SHIPPED.read_text().replace("mode: crew ", "mode: crew: oops ")
    path = tmp_path / "crew.yaml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "oops" in row)
    message = _error(path)
    assert message.startswith(f"{path}:{line}:") and "YAML syntax error" in message


def test_duplicate_key_is_an_error(tmp_path):
    text = SHIPPED.read_text().replace("  seed: 42", "  seed: 42\n  seed: 7")
    path = tmp_path / "crew.yaml"
    path.write_text(text)
    assert "loop.seed: key appears twice" in _error(path)


def test_unknown_placeholder_in_task_template(tmp_path, base):
    base["roles"]["coder"]["task"]["description"] += "\n{feedbak}"
    message = _error(_write(tmp_path, base))
    assert "roles.coder.task.description" in message and "{feedbak}" in message and "{feedback}" in message


def test_only_the_reviewer_may_be_disabled(tmp_path, base):
    base["roles"]["coder"]["enabled"] = False
    assert "roles.coder.enabled" in _error(_write(tmp_path, base))


def test_base_url_only_with_a_provider_model(tmp_path, base):
    base["roles"]["coder"].update(model="offline", base_url="http://127.0.0.1:8000/v1")
    message = _error(_write(tmp_path, base))
    assert "roles.coder.base_url" in message and "openai/<model>" in message and "anthropic/<model>" in message
    base["roles"]["coder"].update(model="anthropic/claude-x")  # an Anthropic endpoint of one's own is fine
    assert load_config(_write(tmp_path, base)).roles.coder.base_url == "http://127.0.0.1:8000/v1"


def test_structured_and_context_settings(tmp_path, base):
    base["roles"]["coder"].update(model="openai/local", base_url="http://127.0.0.1:8000/v1", structured="json_object",
                                  context_tokens=8192)
    base["on_model_failure"] = "stop"
    config = load_config(_write(tmp_path, base))
    assert config.roles.coder.structured == "json_object" and config.roles.coder.context_tokens == 8192
    assert config.roles.coder.timeout_s is None  # resolved per kind of server: 900 s for a base_url
    assert config.on_model_failure == "stop" and load_config(SHIPPED).on_model_failure == "offline"
    base["roles"]["coder"].update(structured="grammar")
    assert "roles.coder.structured" in _error(_write(tmp_path, base))
    base["roles"]["coder"].update(structured="json_schema", model="anthropic/claude-x")
    assert "anthropic models take auto, tool or prompt" in _error(_write(tmp_path, base))
    base["roles"]["coder"].update(structured="auto", context_tokens=100)
    assert "roles.coder.context_tokens" in _error(_write(tmp_path, base))
    base["roles"]["coder"]["context_tokens"] = 4096
    base["on_model_failure"] = "retry"
    assert "on_model_failure" in _error(_write(tmp_path, base))


def test_concurrent_calls_per_provider(tmp_path, base):
    shipped = load_config(SHIPPED)
    assert shipped.concurrent_calls("anthropic") == 4  # a hosted API takes several at once
    assert shipped.concurrent_calls("openai", "http://127.0.0.1:8080/v1") == 1  # a self-hosted server: one
    base["max_concurrent_calls"] = {"anthropic": 8, "http://127.0.0.1:8080/v1": 2}
    config = load_config(_write(tmp_path, base))
    assert config.concurrent_calls("anthropic") == 8 and config.concurrent_calls("openai") == 4
    assert config.concurrent_calls("openai", "http://127.0.0.1:8080/v1") == 2
    assert config.concurrent_calls("openai", "http://127.0.0.1:9999/v1") == 1
    base["max_concurrent_calls"] = 0
    assert "max_concurrent_calls" in _error(_write(tmp_path, base))


def test_empty_and_non_mapping_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "empty" in _error(empty)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert "mapping" in _error(listing)


def test_error_inside_an_extending_file_names_that_file(tmp_path):
    child = tmp_path / "mine.yaml"
    child.write_text(f"extends: {SHIPPED}\nname: mine\nroles:\n  coder:\n    model: nope\n")
    assert _error(child).startswith(f"{child}:5: roles.coder.model:")


def test_missing_extends_target(tmp_path):
    child = tmp_path / "mine.yaml"
    child.write_text("extends: nowhere.yaml\nname: mine\n")
    assert "extends" in _error(child) and "nowhere.yaml" in _error(child)


# ---------------------------------------------------------------------------------------------- models and keys


def test_auto_resolution_order():
    role = load_config(SHIPPED).roles.coder
    both = {"ANTHROPIC_API_KEY": "a", "OPENAI_API_KEY": "o"}
    assert resolve_model(role, both) == AUTO_MODELS["anthropic"]
    assert resolve_model(role, {"OPENAI_API_KEY": "o"}) == AUTO_MODELS["openai"]
    assert resolve_model(role, {"ANTHROPIC_API_KEY": ""}) == "offline"
    assert resolve_model(role, {}) == "offline"
    explicit = role.model_copy(update={"model": "openai/gpt-x"})
    assert resolve_model(explicit, both) == "openai/gpt-x"


def test_missing_key_names_the_variable_never_a_value(tmp_path, base):
    secret = "sk-test-do-not-print-123"
    base["roles"]["coder"]["model"] = "anthropic/claude-x"
    config = load_config(_write(tmp_path, base))
    env = {"OPENAI_API_KEY": secret}
    with pytest.raises(ConfigError) as info:
        check_keys(config, env)
    message = str(info.value)
    assert "ANTHROPIC_API_KEY" in message and "roles.coder.model" in message
    assert secret not in message
    check_keys(config, {"ANTHROPIC_API_KEY": secret})  # set: no error


def test_custom_key_variable_and_fallback_are_checked(tmp_path, base):
    base["roles"]["analyst"].update(model="openai/my-model", api_key_env="MY_LLM_KEY",
                                    base_url="http://127.0.0.1:9/v1", fallback_model="anthropic/claude-x")
    config = load_config(_write(tmp_path, base))
    with pytest.raises(ConfigError, match="MY_LLM_KEY"):
        check_keys(config, {"ANTHROPIC_API_KEY": "a"})
    with pytest.raises(ConfigError, match=r"roles\.analyst\.fallback_model.*ANTHROPIC_API_KEY"):
        check_keys(config, {"MY_LLM_KEY": "k"})
    check_keys(config, {"MY_LLM_KEY": "k", "ANTHROPIC_API_KEY": "a"})


def test_local_server_needs_no_key_and_auto_or_offline_never_fail():
    check_keys(load_config(SHIPPED), {})  # auto resolves to offline
    check_keys(load_config(preset_path("offline")), {})


def test_local_openai_compatible_server_without_key(tmp_path, base):
    base["roles"]["coder"].update(model="openai/qwen", base_url="http://127.0.0.1:8000/v1")
    check_keys(load_config(_write(tmp_path, base)), {})


def test_api_key_env_must_be_a_name_not_a_key(tmp_path, base):
    base["roles"]["coder"]["api_key_env"] = "sk-ant-abc123"
    message = _error(_write(tmp_path, base))
    assert "roles.coder.api_key_env" in message and "sk-ant-abc123" not in message


def test_guard_section_switches_the_guards_own_rules(tmp_path, base):
    assert {k.replace("_", "-") for k in base["guard"]} == set(GUARD_RULES)  # crew.yaml lists every rule
    base["guard"]["no_patching"] = False
    config = load_config(_write(tmp_path, base))
    assert config.guard.enabled_rules() == set(GUARD_RULES) - {"no-patching"}
    base["guard"]["no_pathcing"] = False
    message = _error(_write(tmp_path, base))
    assert "guard.no_pathcing" in message and "no_patching" in message


def test_sandbox_and_wall_time_keys(tmp_path, base):
    config = load_config(SHIPPED)
    assert config.sandbox == "auto"
    assert (config.loop.plausibility.wall_time_tolerance, config.loop.plausibility.wall_time_slack_s) == (0.25, 10)
    base["sandbox"] = "docker"
    message = _error(_write(tmp_path, base))
    assert "sandbox" in message and "'bwrap'" in message and "'docker'" in message
    base["sandbox"] = "landlock"
    base["loop"]["plausibility"]["wall_time_tolerance"] = -1
    message = _error(_write(tmp_path, base))
    assert "loop.plausibility.wall_time_tolerance" in message


@pytest.mark.parametrize(("sampler", "field", "says"), [
    ("random", "sampler.method", "unknown sampler 'random'; expected 'tpe' or 'cmaes'"),
    ({"method": "tpe", "turns": {"crew": 1, "sampler": 0}}, "sampler.turns.sampler", "at least 1 turn per cycle"),
    ({"method": "tpe", "turns": {"crew": -1}}, "sampler.turns.crew", "greater than or equal to 0"),
    ({"method": "cmaes", "box": "far"}, "sampler.box", "'near' or 'wide'"),
    ({"method": "tpe", "trials": 5}, "sampler.trials", "allowed here: method, turns, box, startup_trials"),
    (3, "sampler", "expected 'tpe' or 'cmaes'"),
])
def test_a_bad_sampler_section_is_one_line_naming_the_field(tmp_path, base, sampler, field, says):
    base["sampler"] = sampler
    message = _error(_write(tmp_path, base))
    assert f"{field}: " in message and says in message, message


def test_a_sampler_is_off_unless_named_and_has_a_short_form(tmp_path, base):
    assert load_config(_write(tmp_path, base)).sampler is None
    base["sampler"] = "cmaes"
    sampler = load_config(_write(tmp_path, base)).sampler
    assert (sampler.method, sampler.turns.crew, sampler.turns.sampler, sampler.box) == ("cmaes", 0, 1, "near")
