"""The `autoresearch` command line: init, prepare, run, status, report, compare, memory.

Every command but `init` works on the project in the current folder and says so in one line when there is
none. Bad numbers (`--experiments -1`, `--budget 0`) are one clear error with exit status 2.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from agents import stop
from agents.crewai_env import quiet_crewai

quiet_crewai()

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="A crew of agents that runs ML experiments on train.py and reports what it learned.")
# no markup: messages carry user text, paths and hints such as '.[dev]' that markup would eat
console = Console(markup=False)
err = Console(stderr=True, markup=False)


def _default_tag() -> str:
    return date.today().strftime("%b%d").lower()


def _fail(message: str, hint: str = "") -> None:
    text = Text.assemble(("error:", "bold red"), f" {message}", (f"\nhint: {hint}" if hint else "", "dim"))
    err.print(text, soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def _require_project() -> None:
    """One line and exit 2 when the current folder is not a project (instead of an ImportError later)."""
    from agents.project import is_project, not_a_project_message

    if not is_project(Path.cwd()):
        err.print(f"error: {not_a_project_message(Path.cwd())}", soft_wrap=True, highlight=False)
        raise typer.Exit(code=2)


def check_numbers(**values: tuple[float | None, float, bool]) -> None:
    """Each option's value must be above its bound (`(value, bound, inclusive)`); None means not given.

    Shared by every command that takes counts or budgets, so `--experiments -1` or `--budget 0` is one clear
    error (exit 2) instead of a run that does nothing.
    """
    for name, (value, bound, inclusive) in values.items():
        if value is None:
            continue
        ok = value >= bound if inclusive else value > bound
        if not ok or value != value:  # NaN fails too
            need = f">= {bound:g}" if inclusive else f"> {bound:g}"
            _fail(f"--{name.replace('_', '-')} must be {need}, got {value:g}")


def _config_path(config: Path | None, preset: str | None) -> Path:
    if config is not None and preset is not None:
        _fail("give either --config or --preset, not both")
    if preset is not None:
        from agents.config import ConfigError, preset_path

        try:
            return preset_path(preset)
        except ConfigError as exc:
            _fail(str(exc))
    path = config or Path("crew.yaml")
    if not path.exists():
        _fail(f"config file not found: {path}", "run from the repository root, or pass --config PATH")
    return path


@app.command()
def init(directory: Path = typer.Argument(Path("."), help="folder for the new project (created if needed)")) -> None:
    """Create a ready project: prepare.py, train.py, program.md and crew.yaml, under git with a first commit."""
    from agents.project import InitError, init_project

    try:
        made = init_project(directory)
    except InitError as exc:
        _fail(str(exc))
    where = "a new git repository" if made.new_repository else "the existing git repository"
    console.print(f"created {made.path} in {where} (commit {made.commit}): {', '.join(made.files)}",
                  highlight=False)
    if made.identity_note:
        console.print(made.identity_note, style="dim", highlight=False)
    console.print(f"next: cd {made.path} && autoresearch prepare && autoresearch run --experiments 4 --budget 20",
                  highlight=False)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def prepare(args: list[str] = typer.Argument(None, help="passed to prepare.py, e.g. --source builtin")) -> None:
    """Download (or build offline) the data and train the tokenizer. Idempotent."""
    _require_project()
    raise typer.Exit(subprocess.call([sys.executable, "prepare.py", *(args or [])]))


@app.command()
def run(
    tag: str = typer.Option(None, help="run name; branch autoresearch/<tag>. An existing tag is resumed."),
    config: Path = typer.Option(None, help="crew configuration (default: ./crew.yaml)"),
    preset: str = typer.Option(None, help="a shipped configuration: full, no-reviewer, single-agent, offline, tpe, "
                               "cmaes, centaur"),
    experiments: int = typer.Option(None, help="stop after this many trained experiments"),
    hours: float = typer.Option(None, help="stop after this many hours"),
    usd: float = typer.Option(None, help="stop before spending more than this on LLM calls"),
    budget: float = typer.Option(None, help="training seconds per experiment (default: prepare.py's TIME_BUDGET)"),
    strict: bool = typer.Option(False, "--strict", help="stop the run when a role loses its model, instead of "
                                "playing it with the offline policy (crew.yaml on_model_failure: stop)"),
    workers: str = typer.Option(None, help="experiments in flight: N, or auto (one per GPU); more than 1 uses Ray"),
    address: str = typer.Option(None, help="join a running Ray cluster: auto or ray://HOST:PORT (default: a local "
                                "instance for the run)"),
    live: bool = typer.Option(True, help="live view in the terminal"),
    sandbox: str = typer.Option(None, help="where train.py runs: auto, bwrap, landlock or none (default: crew.yaml)"),
) -> None:
    """Run the research loop until a stop condition, then print the results table and the plot's path."""
    check_numbers(experiments=(experiments, 1, True), hours=(hours, 0, False), usd=(usd, 0, False),
                  budget=(budget, 0, False))
    _require_project()
    from agents.assemble import Overrides, SetupError, build_settings, check_prepared, parse_workers
    from agents.bench.cluster import ClusterError
    from agents.config import ConfigError
    from agents.live import LiveView
    from agents.lock import RunLockError
    from agents.loop import BaselineCrashed, run_loop
    from agents.record.gitops import GitError
    from agents.record.report import best_line, health_lines, plot_progress, results_table, summary_markdown

    tag = tag or _default_tag()
    try:
        overrides = Overrides(max_experiments=experiments, max_hours=hours, max_usd=usd, time_budget=budget,
                              workers=parse_workers(workers) if workers is not None else None, address=address,
                              sandbox=sandbox, on_model_failure="stop" if strict else None)
        check_prepared(Path.cwd())
        settings = build_settings(Path.cwd(), _config_path(config, preset), tag, overrides,
                                  config_name=preset or None)
    except (ConfigError, SetupError, GitError, RunLockError) as exc:
        _fail(str(exc))
    _say_model_policy(settings)
    view = LiveView(console, tag, settings.config.loop.time_budget, enabled=live and console.is_terminal)
    if settings.sandbox_notice and view.enabled:  # without the live view the loop's note prints it
        err.print(Text.assemble(("warning:", "yellow"), f" {settings.sandbox_notice}"), soft_wrap=True)
    settings.on_event = view.handle
    try:
        with view, stop.SWITCH.on_signals(view.say):
            outcome = run_loop(settings)
    except (GitError, RunLockError, BaselineCrashed, ClusterError, ConfigError) as exc:
        _fail(str(exc))
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        _fail(f"disk full while writing results ({exc.filename or exc.strerror})",
              "free some space and run the same command again: the journal resumes the interrupted experiment")
    except KeyboardInterrupt:  # the second Ctrl-C: in-flight calls abandoned, train.py stopped, lock released
        _stopped_now("run the same command again to resume where it stopped", settings.memory.close)
    finally:
        settings.memory.close()

    png = plot_progress(outcome.records, outcome.run_dir / "progress.png", title=f"autoresearch/{tag}")
    (outcome.run_dir / "report.md").write_text(summary_markdown(outcome.records))
    console.print(results_table(outcome.records, width=console.width))
    for line in health_lines(outcome.records):
        console.print(Text(line, style="bold red" if line.startswith("DEGRADED") else "yellow"), soft_wrap=True)
    console.print(f"stopped: {outcome.stop_reason}\n{best_line(outcome.records)}\nbranch: autoresearch/{tag} at "
                  f"{outcome.best_commit[:7]}", highlight=False, soft_wrap=True)
    console.print(f"results: {outcome.run_dir / 'results.tsv'}\nplot:    {png}\nreport:  {outcome.run_dir / 'report.md'}",
                  highlight=False)
    console.print(settings.tracker.summary(), highlight=False, soft_wrap=True)
    if outcome.exit_code:  # stopped on request (130), or the crew made no progress / lost a role's model (1)
        raise typer.Exit(outcome.exit_code)


def _stopped_now(resume_hint: str, *closing) -> None:
    """After the second Ctrl-C: one line, then end the process without waiting for threads still blocked on a
    model's reply (the journal, results and git are written; the kernel releases the run's lock)."""
    err.print(Text.assemble(("stopped now", "yellow"), f": in-flight model calls abandoned, training stopped; "
                            f"{resume_hint}"), soft_wrap=True)
    for close in closing:
        try:
            close()
        except Exception:  # leaving anyway
            pass
    stop.exit_now(stop.EXIT_CODE)


def _say_model_policy(settings) -> None:
    """Say once, before the run, what happens when a role's model keeps failing (the default is a fallback)."""
    if not settings.crew.model_roles:
        return
    cfg = settings.config
    if cfg.on_model_failure == "stop":
        what = "the run stops (on_model_failure: stop)"
    else:
        what = "the offline policy plays it, with a banner (on_model_failure: offline; --strict stops instead)"
    console.print(f"model failures: a role whose model fails {cfg.degrade_after} calls in a row gives it up; when "
                  f"no model is left, {what}", style="dim", highlight=False, soft_wrap=True)


def latest_run(runs: Path) -> Path | None:
    """The run directory whose results were written last, None when there is none."""
    found = [p for p in runs.glob("*") if (p / "results.parquet").exists()]
    return max(found, key=lambda p: (p / "results.parquet").stat().st_mtime, default=None)


def _run_dirs(tag: str | None, every: bool = False) -> list[Path]:
    """The runs a command shows: the one named by --tag, every run, or (the default) the latest; one clear error
    when there is none."""
    runs = Path("runs")
    if tag:
        if not (runs / tag / "results.parquet").exists():
            known = sorted(p.name for p in runs.glob("*") if (p / "results.parquet").exists())
            _fail(f"no results in {runs / tag}", f"runs here: {', '.join(known)}" if known else
                  "start one with `autoresearch run`")
        return [runs / tag]
    if every:
        dirs = sorted(p for p in runs.glob("*") if (p / "results.parquet").exists())
    else:
        latest = latest_run(runs)
        dirs = [latest] if latest is not None else []
    if not dirs:
        _fail(f"no results found under {runs}/", "start one with `autoresearch run`")
    return dirs


@app.command()
def status(tag: str = typer.Option(None, help="run to show (default: the latest run)"),
           every: bool = typer.Option(False, "--all", help="show every run")) -> None:
    """Show the results of a run (the latest by default), which roles ran without their model, and whether a run
    is active."""
    _require_project()
    from agents.record.report import best_line, health_lines, results_table
    from agents.record.results import ResultsStore

    dirs = _run_dirs(tag, every)
    lock = Path(".autoresearch/run.lock")
    holder = lock.read_text().strip() if lock.exists() else ""
    console.print(f"active run: {holder}" if holder else "no run active")
    for d in dirs:
        console.print(d.name, style="bold")
        records = ResultsStore(d).load()
        console.print(results_table(records, width=console.width))
        console.print(best_line(records), highlight=False, soft_wrap=True)
        for line in health_lines(records):
            console.print(Text(line, style="bold red" if line.startswith("DEGRADED") else "yellow"), soft_wrap=True)
        if holder:
            _print_in_flight(d)


def _print_in_flight(run_dir: Path) -> None:
    """Each worker's experiment and how long it has trained, from the journal the running loop keeps."""
    import time

    from agents.record.journal import Journal

    for entry in Journal(run_dir).unfinished():
        if entry.phase == "committed" and entry.started:
            where = entry.node + (f" ({entry.gpu})" if entry.gpu else "")
            title = (entry.idea or {}).get("title", entry.kind)
            console.print(f"  training {entry.exp_id} on {where}: {time.time() - entry.started:.0f} s  {title}",
                          highlight=False)


@app.command()
def report(tag: str = typer.Option(None, help="run to report (default: the latest run)")) -> None:
    """Write progress.png and report.md for a run."""
    _require_project()
    from agents.record.report import plot_progress, summary_markdown
    from agents.record.results import ResultsStore

    run_dir = _run_dirs(tag)[0]
    records = ResultsStore(run_dir).load()
    if not records:
        _fail(f"no results in {run_dir}", "name the run with --tag (see `autoresearch status --all`)")
    png = plot_progress(records, run_dir / "progress.png", title=f"autoresearch/{run_dir.name}")
    (run_dir / "report.md").write_text(summary_markdown(records))
    console.print(f"run:    {run_dir.name}\nplot:   {png}\nreport: {run_dir / 'report.md'}")


@app.command()
def compare(
    configs: list[str] = typer.Argument(None, help="presets (full, no-reviewer, single-agent, offline, tpe, cmaes, "
                                        "centaur) or crew.yaml paths", show_default=False),
    experiments: int = typer.Option(None, help="per run: stop after this many trained experiments"),
    hours: float = typer.Option(None, help="per run: stop after this many hours"),
    usd: float = typer.Option(None, help="per run: stop before spending more than this on LLM calls"),
    budget: float = typer.Option(None, help="training seconds per experiment (default: prepare.py's TIME_BUDGET)"),
    repeats: int = typer.Option(1, help="runs per configuration, with different seeds, to see the spread"),
    name: str = typer.Option(None, help="results go to runs/<name>/ (default: the configurations joined by -vs-)"),
    workers: str = typer.Option("1", help="experiments in flight within each run: N, or auto (one per GPU)"),
    address: str = typer.Option(None, help="a Ray cluster to train on: auto or ray://HOST:PORT"),
) -> None:
    """Compare crew configurations on equal budgets, each from the same commit in its own worktree and memory.

    Runs go one after another, each with the same workers (on Ray when more than one). Interrupted? Run the
    same command again to continue where it stopped.
    """
    check_numbers(experiments=(experiments, 1, True), hours=(hours, 0, False), usd=(usd, 0, False),
                  budget=(budget, 0, False), repeats=(repeats, 1, True))
    _require_project()
    from agents.assemble import SetupError, check_prepared, engine_options
    from agents.bench.cluster import ClusterError
    from agents.compare import Budget, CompareError, plan_compare, run_compare
    from agents.config import ConfigError
    from agents.record.compare_report import compare_table, efficiency_table
    from agents.record.gitops import GitError

    try:
        plan = plan_compare(Path.cwd(), configs or [], Budget(experiments, hours, usd, budget), repeats=repeats,
                            name=name)
        engine = engine_options(workers, address)
        check_prepared(Path.cwd())
    except (CompareError, ConfigError, SetupError) as exc:
        _fail(str(exc))

    def show(event) -> None:
        if event.text:
            console.print(f"[{event.run or plan.name}] {event.text}", highlight=False)

    def say(line: str) -> None:
        err.print(Text(line, style="bold yellow"), soft_wrap=True)

    try:
        with stop.SWITCH.on_signals(say, what="the compare"):
            outcome = run_compare(plan, on_event=show, **engine)
    except (CompareError, GitError, ClusterError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _stopped_now("run the same command again to continue where it stopped")

    report = outcome.report
    console.print(compare_table(report.rows, title=f"compare {plan.name}"))
    console.print(efficiency_table(report.rows))
    console.print(f"report:  {report.markdown}\nplots:   {', '.join(str(p) for p in report.plots)}\n"
                  f"table:   {report.table_csv}\ndata:    {report.dataset}", highlight=False)
    _tracking_line(plan.configs[0].path, plan.name)
    if outcome.interrupted:
        err.print(Text.assemble(("stopped", "yellow"), f": {', '.join(outcome.interrupted)} interrupted; run the same "
                                "command again to continue where it stopped"), soft_wrap=True)
        raise typer.Exit(stop.EXIT_CODE)
    if outcome.failed:
        err.print(Text.assemble((f"{len(outcome.failed)} run(s) failed", "bold red"), f": {', '.join(outcome.failed)} "
                                "(see their error in runs/<name>/manifest.json; run the same command again to retry them)"))
        raise typer.Exit(1)


def _tracking_line(config: Path, experiment: str) -> None:
    from agents.config import ConfigError, load_config
    from agents.record.tracking import resolve_target, summary_line

    try:
        target = resolve_target(Path.cwd(), load_config(config).tracking)
    except ConfigError:
        return
    console.print(summary_line(target, experiment), highlight=False, soft_wrap=True)


def _mount_subapps() -> None:
    from agents.memory_cli import app as memory_app
    from agents.tracking_cli import export_app, ui

    def in_a_project() -> None:
        if not {"--help", "-h"} & set(sys.argv[1:]):
            _require_project()

    app.add_typer(memory_app, name="memory", help="search, inspect and rebuild the experiment memory",
                  callback=in_a_project)
    app.add_typer(export_app, name="export", callback=in_a_project)
    app.command()(ui)


_mount_subapps()

if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
