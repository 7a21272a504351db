"""`autoresearch ui` and `autoresearch export mlflow`: the MLflow side of the command line.

Both find the project's tracking store the way a run does (agents.record.tracking.resolve_target): crew.yaml
`tracking:`, then MLFLOW_TRACKING_URI, then `.autoresearch/mlflow.db`.
"""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from agents.record.tracking import TrackingTarget, shown

export_app = typer.Typer(no_args_is_help=True, add_completion=False,
                         help="rebuild records elsewhere from results.parquet (export mlflow)")
# no markup: messages carry user text, paths and hints such as '.[dev]' that markup would eat
console = Console(markup=False)
err = Console(stderr=True, markup=False)


def _fail(message: str, hint: str = "") -> None:
    text = Text.assemble(("error:", "bold red"), f" {message}", (f"\nhint: {hint}" if hint else "", "dim"))
    err.print(text, soft_wrap=True, highlight=False)
    raise typer.Exit(code=2)


def project_target(config: Path | None) -> TrackingTarget:
    """The tracking target of the project in the current directory (crew.yaml there, if any)."""
    from agents.config import ConfigError, load_config
    from agents.record.tracking import resolve_target

    path = config or Path("crew.yaml")
    if config is not None and not path.exists():
        _fail(f"config file not found: {path}")
    setting = None
    if path.exists():
        try:
            setting = load_config(path).tracking
        except ConfigError as exc:
            _fail(str(exc))
    return resolve_target(Path.cwd(), setting)


def _usable(target: TrackingTarget) -> None:
    if not target.enabled:
        _fail(f"tracking is off: {target.off_reason}")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def ui(port: int = typer.Option(5000, help="port on 127.0.0.1"),
       config: Path = typer.Option(None, help="crew.yaml whose `tracking:` names the store (default: ./crew.yaml)"),
       ) -> None:
    """Start the MLflow web UI on 127.0.0.1 against the project's tracking store; Ctrl-C stops it."""
    from agents.project import is_project, not_a_project_message
    from agents.record.tracking import (
        PortInUse,
        check_port_free,
        experiment_links,
        project_root,
        start_ui,
        stop_ui,
        wait_until_up,
    )

    if not is_project(Path.cwd()):  # the store lives in the project: elsewhere there is nothing to show
        _fail(not_a_project_message(Path.cwd()))
    target = project_target(config)
    _usable(target)
    if target.is_server:
        console.print(f"the project's tracking store is the MLflow server {shown(target.uri)}: open it in a browser",
                      highlight=False, soft_wrap=True)
        return
    if not 1 <= port <= 65535:
        _fail(f"--port must be between 1 and 65535 (got {port})")
    try:
        check_port_free(port)
    except PortInUse as exc:
        _fail(str(exc), "pass another --port, or stop what listens there")
    log_path = project_root(Path.cwd()) / ".autoresearch" / "mlflow-ui.log"
    process = start_ui(target, port, log_path)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # a kill or a closed terminal stops the server too, like Ctrl-C
        signal.signal(sig, _interrupt)
    url = f"http://127.0.0.1:{port}"
    console.print(f"starting the MLflow UI on {url} ...", highlight=False, soft_wrap=True)  # before any signal can end it
    try:
        if not wait_until_up(process, url + "/health"):
            lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
            _fail(f"the MLflow UI did not start: {lines[-1] if lines else 'no output'}", f"full log: {log_path}")
        console.print(f"MLflow UI: {url}\nstore:     {shown(target.uri)}", highlight=False, soft_wrap=True)
        try:
            for name, link in experiment_links(url):
                console.print(f"  {name}: {link}", highlight=False, soft_wrap=True)
        except Exception:  # the links are a convenience: the UI itself is up
            pass
        console.print(f"(Ctrl-C stops it; log: {log_path})", highlight=False, soft_wrap=True)
        process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop_ui(process)


@export_app.command("mlflow")
def export_mlflow(
    tag: str = typer.Option(None, help="only this run (or this compare's runs); default: every run under runs/"),
    config: Path = typer.Option(None, help="crew.yaml whose `tracking:` names the store (default: ./crew.yaml)"),
) -> None:
    """(Re)build the MLflow runs from results.parquet: existing runs are updated, never doubled."""
    from agents.record.tracking import export_runs, find_run_dirs, project_root

    target = project_target(config)
    _usable(target)
    root = project_root(Path.cwd())
    run_dirs = find_run_dirs(root / "runs", tag)
    if not run_dirs:
        _fail(f"no results found under {root / 'runs'}" + (f" for tag {tag!r}" if tag else ""),
              "see `autoresearch status` for the runs there are")
    try:
        exported = export_runs(target, root, run_dirs)
    except Exception as exc:  # the store refused or did not answer: say which and why, in one line
        _fail(shown(f"could not write to {target.uri}: {' '.join(f'{type(exc).__name__}: {exc}'.split())}")[:400])
    for e in exported:
        c = e.counts
        console.print(f"{e.run_tag}: experiment '{e.experiment}', {c.created} created, {c.updated} updated, "
                      f"{c.unchanged} unchanged", highlight=False)
    console.print(f"tracking: {shown(target.uri)}", highlight=False, soft_wrap=True)
