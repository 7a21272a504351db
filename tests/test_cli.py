"""Bad input at the command line: one clear line, exit code 2, and nothing lost."""

from __future__ import annotations

import errno
import subprocess

import pytest
from typer.testing import CliRunner

from agents.cli import app
from agents.record.results import ResultsStore
from tests.toyrepo import check_consistency, make_toy_repo

runner = CliRunner()


def _run(args: list[str]):
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.fixture
def toy(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    make_toy_repo(repo, loop={"max_experiments": 1})
    monkeypatch.chdir(repo)
    return repo


def test_not_a_git_repository(tmp_path, monkeypatch):
    (tmp_path / "crew.yaml").write_text((make_toy_repo(tmp_path / "src")).read_text())
    for name in ("prepare.py", "train.py"):
        (tmp_path / name).write_text((tmp_path / "src" / name).read_text())
    monkeypatch.chdir(tmp_path)
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2
    assert "not a git repository" in result.output


def test_malformed_crew_yaml_names_file_and_field(toy):
    (toy / "crew.yaml").write_text((toy / "crew.yaml").read_text() + "\nloop_typo: 3\n")
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2
    assert "crew.yaml" in result.output and "loop_typo" in result.output


def test_unknown_provider_is_refused(toy):
    text = (toy / "crew.yaml").read_text().replace("model: offline", "model: mistery/big-model", 1)
    (toy / "crew.yaml").write_text(text)
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2 and "anthropic/<model>" in result.output


def test_missing_api_key_names_the_variable(toy, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    text = (toy / "crew.yaml").read_text().replace("model: offline", "model: anthropic/claude-sonnet-4-5", 1)
    (toy / "crew.yaml").write_text(text)
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2 and "ANTHROPIC_API_KEY" in result.output


def test_data_not_prepared(toy):
    (toy / "prepare.py").write_text((toy / "prepare.py").read_text().replace(
        "def ensure_prepared():\n    return Path(__file__).parent",
        "def ensure_prepared():\n    raise FileNotFoundError('No prepared data. Run `python prepare.py` first')"))
    subprocess.run(["git", "commit", "-qam", "unprepared", "--author", "t <t@localhost>"], cwd=toy, check=True,
                   env={"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@localhost", "PATH": "/usr/bin:/bin"})
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2 and "No prepared data" in result.output


def test_uncommitted_train_py_is_refused_and_kept(toy):
    (toy / "train.py").write_text((toy / "train.py").read_text() + "# mine\n")
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2 and "train.py" in result.output
    assert (toy / "train.py").read_text().endswith("# mine\n")


@pytest.mark.slow
def test_disk_full_while_writing_results_loses_nothing(toy, monkeypatch):
    real_write = ResultsStore.write_all

    def full_disk(self, records):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.parquet_path))

    monkeypatch.setattr(ResultsStore, "write_all", full_disk)
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 2 and "disk full" in result.output

    monkeypatch.setattr(ResultsStore, "write_all", real_write)
    result = _run(["run", "--tag", "x", "--no-live"])
    assert result.exit_code == 0, result.output
    records = check_consistency(toy, "x")
    assert [r.status for r in records].count("baseline") == 2
    assert len([r for r in records if r.status in ("keep", "discard", "crash")]) == 1


def test_a_requested_sandbox_that_cannot_start_is_exit_2(toy, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(toy / "no-such-bwrap"))
    result = _run(["run", "--tag", "x", "--no-live", "--sandbox", "bwrap"])
    assert result.exit_code == 2
    assert "sandbox 'bwrap' cannot start here: bwrap not found at" in result.output
    assert not (toy / "runs" / "x").exists()  # refused before anything ran
    result = _run(["run", "--tag", "x", "--no-live", "--sandbox", "docker"])
    assert result.exit_code == 2 and "choose one of: auto, bwrap, landlock, none" in result.output


def test_no_working_sandbox_is_one_warning_and_recorded_as_none(toy, monkeypatch):
    from agents.bench import sandbox

    monkeypatch.setenv("AUTORESEARCH_BWRAP", str(toy / "no-such-bwrap"))
    monkeypatch.setattr(sandbox, "BACKENDS", ("bwrap",))  # as on a machine without Landlock
    result = _run(["run", "--tag", "nosb", "--no-live", "--budget", "0.05"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if "no sandbox works here" in line]
    assert len(warnings) == 1 and "warning" in warnings[0]
    records = check_consistency(toy, "nosb")
    assert records and {r.sandbox for r in records if r.status in ("baseline", "keep", "discard", "crash")} == {"none"}
    import pyarrow.parquet as pq

    columns = pq.read_table(ResultsStore(toy / "runs" / "nosb").parquet_path).column_names
    assert {"sandbox", "eval_seconds"} <= set(columns)
# -- a new project, and commands outside one -------------------------------------------------------------------


def test_init_creates_a_ready_project_from_the_package(tmp_path, monkeypatch):
    from agents.config import PROJECT_TEMPLATE_DIR

    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))  # a machine where git knows nobody
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    result = _run(["init", str(tmp_path / "lab")])
    assert result.exit_code == 0, result.output
    lab = tmp_path / "lab"
    for name in ("prepare.py", "train.py", "program.md", "crew.yaml"):
        assert (lab / name).read_bytes() == (PROJECT_TEMPLATE_DIR / name).read_bytes()
        assert not (lab / name).is_symlink()
    assert "runs/" in (lab / ".gitignore").read_text()
    log = subprocess.run(["git", "log", "--format=%an %s", "--name-only"], cwd=lab, capture_output=True, text=True)
    assert "autoresearch autoresearch project" in log.stdout and "train.py" in log.stdout
    assert subprocess.run(["git", "status", "--porcelain"], cwd=lab, capture_output=True, text=True).stdout == ""
    assert "no user configured" in result.output and "autoresearch prepare" in result.output

    again = _run(["init", str(lab)])  # never overwrites a project
    assert again.exit_code == 2 and "already has prepare.py" in again.output and "nothing was changed" in again.output


@pytest.mark.parametrize("args", [["run", "--no-live"], ["prepare"], ["status"], ["report"], ["compare", "offline"],
                                  ["memory", "stats"], ["ui"], ["export", "mlflow"]])
def test_every_command_outside_a_project_says_so_and_suggests_init(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = _run(args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "not an autoresearch project" in lines[0] and "autoresearch init" in lines[0], lines


@pytest.mark.parametrize("args, named", [
    (["run", "--experiments", "-1"], "--experiments must be >= 1"),
    (["run", "--budget", "0"], "--budget must be > 0"),
    (["run", "--hours", "-2"], "--hours must be > 0"),
    (["run", "--usd", "0"], "--usd must be > 0"),
    (["compare", "offline", "--repeats", "0"], "--repeats must be >= 1"),
    (["compare", "offline", "--experiments", "0"], "--experiments must be >= 1"),
    (["run", "--experiments", "1", "--workers", "0"], "--workers must be a whole number of at least 1"),
])
def test_bad_numbers_are_one_clear_error(toy, args, named):
    result = _run(args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and named in lines[0], lines
    assert not (toy / "runs").exists()  # nothing started
