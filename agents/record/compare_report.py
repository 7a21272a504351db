"""What a compare found: a table per configuration, best-so-far plots, a markdown report, one Parquet dataset.

Everything here reads the runs' results.parquet and sessions.json under `runs/<compare>/`, so the report can
be rebuilt at any time. Lower val_bpb is better; a run's gain is its best minus its own baseline mean.

Best-so-far follows the loop's notion of the best: the mean of the baseline runs, then each kept result
(kept only when it beat the best by more than the noise), so a lucky discarded run does not count.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich import box
from rich.table import Table

from agents.record.report import plot_progress, summary_markdown
from agents.record.results import ExperimentRecord, ResultsStore, records_to_table

if TYPE_CHECKING:
    from agents.compare import ComparePlan

TRAINED = ("keep", "discard", "crash")
TIME_GRID_POINTS = 400
COUNTED = (("kept", "keep"), ("discarded", "discard"), ("crashed", "crash"), ("vetoed", "veto"),
           ("repeats_refused", "repeat"), ("skipped", "skipped"))


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class RunData:
    tag: str
    config: str
    repeat: int
    run_dir: Path
    state: str = ""
    stop_reason: str = ""
    records: list[ExperimentRecord] = field(default_factory=list)  # in the order they were started
    sessions: list[tuple[datetime, datetime | None]] = field(default_factory=list)

    @property
    def baseline_bpb(self) -> float | None:
        values = [r.val_bpb for r in self.records if r.status == "baseline" and r.val_bpb is not None]
        return statistics.fmean(values) if values else None

    @property
    def best_bpb(self) -> float | None:
        curve = index_curve(self.records)
        return curve[-1] if curve else None


def load_run(tag: str, config: str, repeat: int, run_dir: Path, state: str = "", stop_reason: str = "") -> RunData:
    records = sorted(ResultsStore(run_dir).load(), key=lambda r: r.exp_id)  # ids are handed out in start order
    sessions_path = Path(run_dir) / "sessions.json"
    sessions = []
    if sessions_path.exists():
        for s in json.loads(sessions_path.read_text()):
            sessions.append((_parse(s["start"]), _parse(s["end"]) if s.get("end") else None))
    return RunData(tag, config, repeat, Path(run_dir), state, stop_reason, records, sessions)


def load_compare(compare_dir: Path, manifest: dict) -> list[RunData]:
    return [load_run(tag, s["config"], s["repeat"], compare_dir / s["dir"], s["state"], s.get("stop_reason", ""))
            for tag, s in manifest["runs"].items()]


# ---------------------------------------------------------------------------------------------- curves


def index_curve(records: list[ExperimentRecord]) -> list[float]:
    """Best val_bpb after 0, 1, 2, ... trained experiments (0: the baseline mean); [] without a baseline."""
    baselines = [r.val_bpb for r in records if r.status == "baseline" and r.val_bpb is not None]
    if not baselines:
        return []
    best = statistics.fmean(baselines)
    curve = [best]
    for r in records:
        if r.status in TRAINED:
            if r.status == "keep" and r.val_bpb is not None:
                best = min(best, r.val_bpb)
            curve.append(best)
    return curve


def run_clock(run: RunData) -> Callable[[datetime], float]:
    """Seconds the run had been active at a moment, leaving out the time a compare sat interrupted."""
    stamps = [_parse(r.finished_at) for r in run.records if r.finished_at]
    sessions = run.sessions or _sessions_from_records(run.records)
    spans = []
    for i, (start, end) in enumerate(sessions):
        if end is None:  # killed: it lasted until its last experiment
            following = sessions[i + 1][0] if i + 1 < len(sessions) else None
            inside = [t for t in stamps if t >= start and (following is None or t < following)]
            end = max(inside, default=start)
        spans.append((start, end))

    def elapsed(moment: datetime) -> float:
        total = 0.0
        for start, end in spans:
            if moment >= end:
                total += (end - start).total_seconds()
            elif moment >= start:
                total += (moment - start).total_seconds()
        return max(total, 0.0)

    return elapsed


def active_seconds(run: RunData) -> dict[str, float]:
    """exp_id -> seconds the run had been active when that experiment finished."""
    clock = run_clock(run)
    return {r.exp_id: clock(_parse(r.finished_at)) for r in run.records if r.finished_at}


def total_active_seconds(run: RunData) -> float:
    return run_clock(run)(datetime.max.replace(tzinfo=UTC))


def time_curve(run: RunData) -> list[tuple[float, float]]:
    """(active seconds, best val_bpb) at the last baseline and at every trained experiment."""
    seconds = active_seconds(run)
    baselines = [r for r in run.records if r.status == "baseline" and r.val_bpb is not None]
    if not baselines:
        return []
    best = statistics.fmean(r.val_bpb for r in baselines)
    points = [(max(seconds.get(r.exp_id, 0.0) for r in baselines), best)]
    for r in run.records:
        if r.status in TRAINED:
            if r.status == "keep" and r.val_bpb is not None:
                best = min(best, r.val_bpb)
            # experiments finish in the order they start; keep time monotone despite second-resolution stamps
            points.append((max(seconds.get(r.exp_id, 0.0), points[-1][0]), best))
    return points


def _sessions_from_records(records: list[ExperimentRecord]) -> list[tuple[datetime, datetime | None]]:
    """No sessions.json (results copied from elsewhere): one session, from the first run's start to the last."""
    timed = sorted((_parse(r.finished_at), r.wall_seconds or 0.0) for r in records if r.finished_at)
    if not timed:
        return []
    start = datetime.fromtimestamp(timed[0][0].timestamp() - timed[0][1], UTC)
    return [(start, timed[-1][0])]


# ---------------------------------------------------------------------------------------------- tables


def run_row(run: RunData) -> dict:
    """One run's figures, as in the table (numbers, not text)."""
    recs = run.records
    baseline, best = run.baseline_bpb, run.best_bpb
    row = {"config": run.config, "repeat": run.repeat, "run": run.tag, "state": run.state,
           "baseline_bpb": baseline, "best_bpb": best,
           "gain": (best - baseline) if best is not None and baseline is not None else None,
           "experiments": sum(r.status in TRAINED for r in recs)}
    row |= {name: sum(r.status == status for r in recs) for name, status in COUNTED}
    row |= {"gpu_hours": sum(r.wall_seconds or 0.0 for r in recs) / 3600,
            "tokens": sum(r.tokens_in + r.tokens_out for r in recs),
            "usd": sum(r.usd for r in recs),
            "wall_seconds": total_active_seconds(run),
            "stop_reason": run.stop_reason}
    row |= efficiency(row)
    return row


RATES = (("gain_per_experiment", "experiments", 1.0), ("gain_per_hour", "wall_seconds", 3600.0),
         ("gain_per_usd", "usd", 1.0))


def efficiency(row: dict) -> dict:
    """The run's gain per trained experiment, per hour of wall-clock and per USD of LLM calls (None where the run
    spent none of it, or has no gain yet)."""
    gain = row["gain"]
    return {name: (gain / (row[spent] / unit) if gain is not None and row[spent] > 0 else None)
            for name, spent, unit in RATES}


def config_rows(runs: list[RunData]) -> list[dict]:
    """One row per configuration: mean over its repeats (with the standard deviation of best and gain)."""
    rows = []
    for config in dict.fromkeys(r.config for r in runs):
        mine = [run_row(r) for r in runs if r.config == config]
        row: dict = {"config": config, "runs": len(mine), "finished": sum(m["state"] == "done" for m in mine)}
        for key in ("best_bpb", "gain", *(name for name, _, _ in RATES)):
            values = [m[key] for m in mine if m[key] is not None]
            row[key] = statistics.fmean(values) if values else None
            row[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else None
        for key in ("experiments", *(name for name, _ in COUNTED), "gpu_hours", "tokens", "usd", "wall_seconds"):
            row[key] = statistics.fmean(m[key] for m in mine)
        rows.append(row)
    return rows


def compare_table(rows: list[dict], title: str = "compare") -> Table:
    """The per-configuration table for the terminal; config, best and gain are never cut short."""
    cells = [_row_cells(row, rates=False) for row in rows]
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    for i, name in enumerate(("config", "runs", "best val_bpb", "gain", "exps", "kept", "disc", "crash", "veto",
                              "rep", "GPU-h", "tokens", "USD", "wall")):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True,
                         min_width=max([len(name)] + [len(c[i]) for c in cells]) if i in (0, 2, 3) else None)
    for row in cells:
        table.add_row(*row)
    return table


def efficiency_table(rows: list[dict], title: str = "gain per unit spent") -> Table:
    """Per configuration: its gain per trained experiment, per hour and per USD (± the spread over repeats)."""
    table = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
    table.add_column("config", no_wrap=True, min_width=max([6] + [len(row["config"]) for row in rows]))
    for name in ("gain per experiment", "per hour", "per USD"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(row["config"], *(_rate(row[name], row[f"{name}_sd"]) for name, _, _ in RATES))
    return table


def _row_cells(row: dict, rates: bool = True) -> list[str]:
    rates = [_rate(row[name], row[f"{name}_sd"]) for name, _, _ in RATES] if rates else []
    return [row["config"], f"{row['finished']}/{row['runs']}", _mean_sd(row["best_bpb"], row["best_bpb_sd"]),
            _mean_sd(row["gain"], row["gain_sd"], signed=True), *rates, _num(row["experiments"]), _num(row["kept"]),
            _num(row["discarded"]), _num(row["crashed"]), _num(row["vetoed"]), _num(row["repeats_refused"]),
            f"{row['gpu_hours']:.3f}", f"{row['tokens']:,.0f}", f"{row['usd']:.2f}", _duration(row["wall_seconds"])]


# ---------------------------------------------------------------------------------------------- plots


def plot_best_by_experiment(runs: list[RunData], path: Path, title: str = "") -> Path:
    """Best-so-far val_bpb against trained experiments: one line per configuration, the band spans its repeats."""
    curves = {config: [c for r in runs if r.config == config and (c := index_curve(r.records))]
              for config in dict.fromkeys(r.config for r in runs)}
    fig, ax = _figure("trained experiments (0 = baseline)", title or "best val_bpb by experiment")
    for n, (config, series) in enumerate(curves.items()):
        if not series:
            continue
        length = max(len(s) for s in series)
        # a run that stopped early keeps its best: carry its last value forward; the best after experiment j
        # is drawn over [j, j + 1), so the last experiment's result gets its own step too
        grid = np.array([s + [s[-1]] * (length + 1 - len(s)) for s in series])
        _draw(ax, np.arange(length + 1), grid, config, n)
    return _save(fig, ax, path)


def plot_best_by_time(runs: list[RunData], path: Path, title: str = "") -> Path:
    """Best-so-far val_bpb against the wall-clock time each run was active; band over repeats."""
    curves = {config: [c for r in runs if r.config == config and (c := time_curve(r))]
              for config in dict.fromkeys(r.config for r in runs)}
    horizon = max((c[-1][0] for series in curves.values() for c in series), default=0.0)
    unit, scale = ("hours", 3600.0) if horizon > 3 * 3600 else ("minutes", 60.0) if horizon > 180 else ("seconds", 1.0)
    fig, ax = _figure(f"wall-clock ({unit})", title or "best val_bpb by wall-clock")
    grid_x = np.linspace(0.0, max(horizon, 1e-9), TIME_GRID_POINTS)
    for n, (config, series) in enumerate(curves.items()):
        if not series:
            continue
        grid = np.array([_step_values(c, grid_x) for c in series])
        _draw(ax, grid_x / scale, grid, config, n)
    return _save(fig, ax, path)


def _step_values(points: list[tuple[float, float]], xs: np.ndarray) -> np.ndarray:
    """The step function through `points` at xs (NaN before its first point)."""
    px = np.array([p[0] for p in points])
    py = np.array([p[1] for p in points])
    idx = np.searchsorted(px, xs, side="right") - 1
    return np.where(idx >= 0, py[np.clip(idx, 0, None)], np.nan)


def _draw(ax, xs: np.ndarray, grid: np.ndarray, label: str, n: int) -> None:
    color = f"C{n % 10}"
    defined = ~np.all(np.isnan(grid), axis=0)
    xs, grid = xs[defined], grid[:, defined]
    if not len(xs):
        return
    middle = np.nanmedian(grid, axis=0)
    repeats = grid.shape[0]
    ax.step(xs, middle, where="post", color=color, linewidth=2,
            label=f"{label} (median of {repeats})" if repeats > 1 else label)
    if repeats > 1:
        ax.fill_between(xs, np.nanmin(grid, axis=0), np.nanmax(grid, axis=0), step="post", color=color, alpha=0.2,
                        linewidth=0)


def _figure(xlabel: str, title: str):
    fig = Figure(figsize=(10, 5.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("best val_bpb so far (lower is better)")
    ax.set_title(title)
    ax.grid(True, alpha=0.25)
    return fig, ax


def _save(fig: Figure, ax, path: Path) -> Path:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=9)
    else:
        ax.text(0.5, 0.5, "no baseline finished yet", ha="center", va="center", transform=ax.transAxes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


# ---------------------------------------------------------------------------------------------- dataset


def experiments_table(runs: list[RunData]) -> pa.Table:
    """Every experiment of the compare, with `compare`-level columns for pandas / duckdb users."""
    tables = []
    for run in runs:
        table = records_to_table(run.records)
        seconds = active_seconds(run)
        n = table.num_rows
        table = table.append_column("repeat", pa.array([run.repeat] * n, pa.int64()))
        table = table.append_column("run", pa.array([run.tag] * n, pa.string()))
        table = table.append_column("active_seconds", pa.array([seconds.get(r.exp_id) for r in run.records],
                                                                pa.float64()))
        tables.append(table)
    if not tables:
        return records_to_table([])
    return pa.concat_tables(tables)


# ---------------------------------------------------------------------------------------------- markdown


def compare_markdown(name: str, manifest: dict, runs: list[RunData], rows: list[dict], plots: dict[str, str]) -> str:
    budget = manifest["arguments"]["budget"]
    repeats = manifest["arguments"]["repeats"]
    limits = [text for key, text in (("experiments", "{} trained experiments"), ("hours", "{} hours"),
                                     ("usd", "${} of LLM calls"), ("time_budget", "{} s of training each"))
              if (value := budget.get(key)) is not None for text in [text.format(value)]]
    out = [f"# Compare: {name}", "",
           f"Every run started from commit `{manifest['start_commit'][:10]}` with its own memory; budget per run: "
           f"{', '.join(limits) or 'as in the configuration files'}; {repeats} run{'s' * (repeats > 1)} per "
           "configuration.", ""]
    out += ["## Results", "",
            "| config | runs | best val_bpb | gain vs baseline | gain per experiment | gain per hour | gain per USD "
            "| experiments | kept | discarded | crashed | vetoed | refused as repeat | GPU-hours | tokens | USD "
            "| wall time |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    out += ["| " + " | ".join(_row_cells(row)) + " |" for row in rows]
    out += ["", "Lower is better. Gain: best val_bpb minus the run's own baseline mean (negative: improved); per "
            "experiment, per hour and per USD: that gain divided by the run's trained experiments, its wall-clock hours "
            "and its spending on LLM calls ('–' where it spent nothing). "
            + ("Best, gain and the gains per unit are means ± standard deviation over repeats; the other figures are "
               "means per run. " if repeats > 1 else "")
            + "GPU-hours: time spent running train.py, re-runs not included.", ""]
    for title, file in plots.items():
        out += [f"![{title}]({file})", ""]

    out += ["## Runs", "", "| run | state | baseline | best | gain | experiments | kept | tokens | USD | wall time "
            "| stopped because | report |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        r = run_row(run)
        report = f"[report]({run.run_dir.name}/report.md)" if run.records else "–"
        out.append(f"| {run.tag} | {run.state or '–'} | {_fmt(r['baseline_bpb'])} | {_fmt(r['best_bpb'])} | "
                   f"{_fmt(r['gain'], signed=True)} | {r['experiments']} | {r['kept']} | {r['tokens']:,} | "
                   f"{r['usd']:.2f} | {_duration(r['wall_seconds'])} | {_cell(r['stop_reason'] or '–')} | {report} |")
    out.append("")

    out += ["## What each configuration kept", ""]
    for config in dict.fromkeys(r.config for r in runs):
        out.append(f"**{config}**")
        for run in (r for r in runs if r.config == config):
            kept = [r for r in run.records if r.status == "keep"]
            chain = "; ".join(f"{_cell(r.description, 60)} ({_fmt(r.delta, 4, signed=True)})" for r in kept)
            out.append(f"- repeat {run.repeat}: {chain or 'nothing kept'}")
        out.append("")

    out += ["## Data", "",
            "`experiments.parquet` holds every experiment of every run, with `config`, `repeat`, `run` and "
            "`active_seconds` columns; for example in duckdb:", "",
            "```sql",
            f"SELECT config, repeat, min(val_bpb) AS best FROM 'runs/{name}/experiments.parquet'",
            "WHERE status IN ('baseline', 'keep') GROUP BY config, repeat ORDER BY best;",
            "```", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------- all of it


@dataclass
class CompareReport:
    rows: list[dict]  # config_rows
    runs: list[RunData]
    table_csv: Path
    dataset: Path
    plots: list[Path]
    markdown: Path


def write_compare_report(plan: ComparePlan, manifest: dict) -> CompareReport:
    """Write table.csv, experiments.parquet, the two plots, report.md, and each run's own report."""
    compare_dir = plan.compare_dir
    runs = load_compare(compare_dir, manifest)
    rows = config_rows(runs)
    for run in runs:
        if run.records:  # each run also gets the single-run report, next to its results
            plot_progress(run.records, run.run_dir / "progress.png", title=f"autoresearch/{run.tag}")
            (run.run_dir / "report.md").write_text(summary_markdown(run.records, title=f"Research summary: {run.tag}"))

    table_csv = compare_dir / "table.csv"
    pacsv.write_csv(pa.Table.from_pylist(rows), table_csv)
    dataset = compare_dir / "experiments.parquet"
    pq.write_table(experiments_table(runs), dataset)
    plots = {"best val_bpb by experiment": plot_best_by_experiment(runs, compare_dir / "best_by_experiment.png",
                                                                   f"{plan.name}: best val_bpb by experiment"),
             "best val_bpb by wall-clock": plot_best_by_time(runs, compare_dir / "best_by_time.png",
                                                             f"{plan.name}: best val_bpb by wall-clock")}
    markdown = compare_dir / "report.md"
    markdown.write_text(compare_markdown(plan.name, manifest, runs, rows, {k: p.name for k, p in plots.items()}))
    return CompareReport(rows, runs, table_csv, dataset, list(plots.values()), markdown)


# ---------------------------------------------------------------------------------------------- formatting


def _fmt(value: float | None, digits: int = 6, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _mean_sd(value: float | None, sd: float | None, signed: bool = False) -> str:
    text = _fmt(value, signed=signed)
    return f"{text} ±{sd:.2g}" if sd is not None else text


def _rate(value: float | None, sd: float | None) -> str:
    """A gain per unit: small or large, so in scientific notation (± the spread over repeats)."""
    if value is None:
        return "–"
    return f"{value:+.2e}" + (f" ±{sd:.1e}" if sd is not None else "")


def _num(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.1f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _cell(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    text = text if len(text) <= width else text[: width - 1] + "…"
    return text.replace("|", "\\|")


def _parse(stamp: str) -> datetime:
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


