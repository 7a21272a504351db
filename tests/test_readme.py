"""The README's two fresh-machine commands stay true: CI runs exactly the test command it gives."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```bash\n")[1:3]
    return [block.split("\n```")[0].strip() for block in blocks]


def test_ci_runs_the_readme_test_command():
    main_job, tests = _readme_commands()
    assert "autoresearch run" in main_job and "autoresearch prepare" in main_job
    assert "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert tests in ci, f"{tests!r} is not a line of .ci/run"


def test_the_main_job_names_real_commands():
    from typer.main import get_command

    from agents.cli import app

    main_job = _readme_commands()[0]
    names = set(get_command(app).commands)
    used = {part.split()[1] for part in main_job.split("&&") if part.strip().startswith("autoresearch")}
    assert used <= names, used - names
