"""Reports on a run: progress.png, a markdown summary and a terminal table.

All three read only `ExperimentRecord`s, so they can be rebuilt from results.parquet at any time.
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from rich import box
from rich.table import Table
from rich.text import Text

from agents.bench.decide import estimate_sigma
from agents.crew.llm.faults import FAULT_KINDS, FAULT_LABELS
from agents.record.results import REFUSED, STATUSES, ExperimentRecord

NOT_TRAINED = REFUSED  # refused (or failed) before any training: never have a val_bpb
_STATUS_STYLE = {
    "baseline": "cyan",
    "keep": "bold green",
    "discard": "dim",
    "crash": "red",
    "veto": "yellow",
    "repeat": "yellow",
    "skipped": "yellow",
    "error": "red",
}


def _short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt(value: float | None, digits: int = 6, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def id_key(exp_id: str) -> tuple:
    """Sort key of an experiment id: its number ("0012", "exp012", "tag/0012" -> 12), then the text."""
    match = re.search(r"(\d+)(?!.*\d)", exp_id.split(".")[0])
    return (int(match.group(1)) if match else 1 << 30, exp_id)


def in_id_order(records: list[ExperimentRecord]) -> list[tuple[int, ExperimentRecord]]:
    """(decided order, record) sorted by experiment id; the records come in the order they were decided."""
    return sorted(enumerate(records, start=1), key=lambda item: id_key(item[1].exp_id))


def is_simpler_keep(record: ExperimentRecord) -> bool:
    """Kept as simpler at equal val_bpb within noise (not a gain); also read from older records' reasons."""
    if record.status != "keep":
        return False
    return record.kept_as == "simpler" or (not record.kept_as and "shorter at equal val_bpb" in record.decision_reason)


def baseline_stats(records: list[ExperimentRecord]) -> tuple[float, float, int] | None:
    """(mean, σ, runs) of the baselines' val_bpb, σ as the keep rule estimates it; None without baselines."""
    values = [r.val_bpb for r in records if r.status == "baseline" and r.val_bpb is not None]
    if not values:
        return None
    return statistics.fmean(values), estimate_sigma(values), len(values)


def best_kept(records: list[ExperimentRecord]) -> ExperimentRecord | None:
    """The kept experiment with the lowest val_bpb below the baseline mean (None: nothing kept beat the start)."""
    stats = baseline_stats(records)
    kept = [r for r in records if r.status == "keep" and r.val_bpb is not None]
    if stats is not None:
        kept = [r for r in kept if r.val_bpb < stats[0]]
    return min(kept, key=lambda r: r.val_bpb, default=None)


def best_line(records: list[ExperimentRecord]) -> str:
    """One line on where the run stands: the best kept experiment, or the baseline mean when nothing beat it."""
    stats = baseline_stats(records)
    best = best_kept(records)
    simpler = sum(is_simpler_keep(r) for r in records)
    also = f"; {simpler} change(s) kept as simpler within noise" if simpler else ""
    if best is not None:
        versus = ""
        if stats is not None:
            gain = best.val_bpb - stats[0]
            versus = f", {gain:+.6f} ({100 * gain / stats[0]:+.2f} %) vs the baseline mean {stats[0]:.6f}"
        return f"best val_bpb: {best.val_bpb:.6f} (experiment {best.exp_id}, commit {best.commit[:7]}{versus}){also}"
    if stats is not None:
        return (f"no change beat the start: baseline mean val_bpb {stats[0]:.6f} ± {stats[1]:.6f} over {stats[2]} "
                f"run(s){also}")
    return "no val_bpb yet"


def _x(record: ExperimentRecord) -> int:
    number = id_key(record.exp_id)[0]
    return number if number < 1 << 30 else 0


# --- progress.png --------------------------------------------------------------------------------


def progress_figure(records: list[ExperimentRecord], title: str = "") -> Figure:
    """val_bpb by experiment id: the baselines' mean ± σ as a band, kept experiments labelled, the rest grey,
    the best kept so far as a line that only steps down.

    Everything trained stays in the frame: a value far above the rest (a diverged run) is drawn at the top
    edge with its value written beside it. Crashed runs and refused proposals have no val_bpb: they are
    marked along the bottom. Labels are moved to stay inside the axes; the legend sits outside, on the right.
    """
    fig = Figure(figsize=(12, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("experiment id")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, alpha=0.25)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)):04d}"))
    head = title or "autoresearch progress"

    scored = [r for r in records if r.val_bpb is not None]
    if not scored:
        ax.text(0.5, 0.5, "no scored experiments yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(head)
        return fig

    stats = baseline_stats(records)
    xs = [_x(r) for r in records]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    low, top, pad = _y_range(records, stats)
    ax.set_ylim(low - 3 * pad, top + 2.5 * pad)  # below: the band of unscored markers; above: clipped values
    edge = top + 1.2 * pad

    if stats is not None:
        mean, sigma, n = stats
        ax.axhspan(mean - sigma, mean + sigma, color="#1f77b4", alpha=0.12, zorder=0,
                   label=f"baseline mean ± σ ({mean:.4f} ± {sigma:.4f}, {n} run{'s' * (n > 1)})")
        ax.axhline(mean, color="#1f77b4", linestyle="--", linewidth=1, zorder=1, label="baseline mean")

    def group(rows: list[ExperimentRecord], **style) -> None:
        inside = [(_x(r), r.val_bpb) for r in rows if r.val_bpb <= top]
        if inside:
            ax.scatter(*zip(*inside, strict=True), **style)

    others = [r for r in scored if r.status not in ("baseline", "keep")]
    group(others, color="#9a9a9a", s=24, zorder=3, label=f"discarded ({len(others)})")
    group([r for r in scored if r.status == "baseline"], color="#1f77b4", marker="s", s=50, zorder=4,
          label=f"baseline runs ({sum(r.status == 'baseline' for r in scored)})")
    gains = [r for r in scored if r.status == "keep" and not is_simpler_keep(r)]
    simpler = [r for r in scored if is_simpler_keep(r)]
    group(gains, color="#2ca02c", s=70, edgecolors="black", linewidths=0.6, zorder=6, label=f"kept ({len(gains)})")
    group(simpler, facecolors="white", edgecolors="#2ca02c", linewidths=1.5, s=70, zorder=6,
          label=f"kept as simpler, within noise ({len(simpler)})")

    labels = []
    clipped = [r for r in scored if r.val_bpb > top]
    if clipped:
        ax.scatter([_x(r) for r in clipped], [edge] * len(clipped), marker="^", color="#707070", s=34, zorder=3,
                   label=f"above the scale, value written ({len(clipped)})")
        labels += [ax.annotate(f"{r.val_bpb:.4f}", (_x(r), edge), xytext=(5, -3), textcoords="offset points",
                               fontsize=7, color="#505050") for r in clipped]

    line = _best_so_far(records, stats)
    if line:
        ax.step([x for x, _ in line], [y for _, y in line], where="post", color="#2ca02c", linewidth=1.6, zorder=5,
                label="best kept so far")
    labels += [ax.annotate(f"{r.exp_id} {_short(r.description, 34)}", (_x(r), r.val_bpb), xytext=(6, 6),
                           textcoords="offset points", fontsize=7, color="#1b5e20")
               for r in gains + simpler if r.val_bpb <= top]

    bottom = low - 2 * pad
    crashed = [_x(r) for r in records if r.status == "crash" and r.val_bpb is None]
    refused = [_x(r) for r in records if r.status in NOT_TRAINED]
    if crashed:
        ax.scatter(crashed, [bottom] * len(crashed), marker="x", color="#d62728", s=30, zorder=3,
                   label=f"crashed, no val_bpb ({len(crashed)})")
    if refused:
        ax.scatter(refused, [bottom] * len(refused), marker="|", color="#ff9f1c", s=60, zorder=3,
                   label=f"refused before training ({len(refused)})")

    kept = sum(r.status == "keep" for r in records)
    ax.set_title(f"{head}\n{len(records)} experiments, {kept} kept; {best_line(records)}", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, borderaxespad=0.0)
    _keep_inside(fig, ax, labels)
    return fig


def plot_progress(records: list[ExperimentRecord], path: Path, title: str = "") -> Path:
    """progress_figure, written as a PNG to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    progress_figure(records, title).savefig(path, bbox_inches="tight")
    return path


def _y_range(records: list[ExperimentRecord], stats: tuple[float, float, int] | None) -> tuple[float, float, float]:
    """(lowest value, top of the scale, padding): every value is on the scale unless it lies far above the rest."""
    values = sorted(r.val_bpb for r in records if r.val_bpb is not None)
    core = [r.val_bpb for r in records if r.status in ("baseline", "keep") and r.val_bpb is not None] or values
    low = min(values)
    core_top = max(core)
    if stats is not None:
        low, core_top = min(low, stats[0] - stats[1]), max(core_top, stats[0] + stats[1])
    span = max(core_top - low, 0.002 * abs(low), 1e-4)
    top = max(v for v in values if v <= low + 8 * span) if any(v <= low + 8 * span for v in values) else core_top
    top = max(top, core_top)
    return low, top, max(top - low, span) * 0.06


def _best_so_far(records: list[ExperimentRecord], stats) -> list[tuple[float, float]]:
    """The best kept val_bpb at each experiment id: the baseline mean, then lower only where a keep scored lower."""
    if stats is None:
        return []
    after = [r for r in records if r.status != "baseline"]
    first = min([_x(r) for r in after], default=max(_x(r) for r in records))
    best, points = stats[0], [(first - 0.5, stats[0])]
    for r in sorted((r for r in records if r.status == "keep" and r.val_bpb is not None), key=lambda r: _x(r)):
        if r.val_bpb < best:
            best = r.val_bpb
            points.append((_x(r), best))
    points.append((max(_x(r) for r in records) + 0.5, best))
    return points


def _keep_inside(fig: Figure, ax, labels: list) -> None:
    """Move each label that pokes out of the axes back in: to the left of its point, then below it."""
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    for text in labels:
        box = text.get_window_extent(renderer)
        dx, dy = text.xyann
        if box.x1 > frame.x1:
            text.set_horizontalalignment("right")
            dx = -abs(dx)
        if box.y1 > frame.y1:
            text.set_verticalalignment("top")
            dy = -abs(dy) - 2
        text.xyann = (dx, dy)
        box = text.get_window_extent(renderer)
        if box.x0 < frame.x0:  # still out on the left: shift it right by what pokes out (in points)
            text.xyann = (text.xyann[0] + (frame.x0 - box.x0) * 72 / fig.dpi + 2, text.xyann[1])


# --- model health: degraded roles and faults survived ---------------------------------------------


def degraded_lines(records: list[ExperimentRecord]) -> list[str]:
    """Which roles gave up their configured model, since which experiment and why (latest state of the run)."""
    latest = next((r.degraded_roles for r in reversed(records) if r.degraded_roles), "")
    return [line.strip() for line in latest.split("; ") if line.strip()] if latest else []


def faults_by_role(records: list[ExperimentRecord]) -> dict[str, Counter]:
    """Provider faults survived, summed over the run's experiments, per role."""
    totals: dict[str, Counter] = {}
    for r in records:
        if not r.faults:
            continue
        try:
            data = json.loads(r.faults)
        except ValueError:
            continue
        for role, counts in data.items():
            totals.setdefault(role, Counter()).update({k: int(v) for k, v in counts.items() if k in FAULT_KINDS})
    return {role: counts for role, counts in sorted(totals.items()) if sum(counts.values())}


def health_lines(records: list[ExperimentRecord]) -> list[str]:
    """Plain lines for the terminal: degraded roles first, then the faults each role survived."""
    lines = [f"DEGRADED {line}" for line in degraded_lines(records)]
    for role, counts in faults_by_role(records).items():
        lines.append(f"faults survived by {role}: "
                     + ", ".join(f"{counts[k]} {FAULT_LABELS[k]}" for k in FAULT_KINDS if counts[k]))
    return lines


def _health_markdown(records: list[ExperimentRecord]) -> list[str]:
    degraded = degraded_lines(records)
    faults = faults_by_role(records)
    out: list[str] = []
    if degraded:
        out += ["## Warning: roles that ran without their model", "",
                "These roles gave up their configured model during the run; from the experiment named on, "
                "the model after the arrow played them (the offline policy when no model was left).", ""]
        out += [f"- {_cell(line, 400)}" for line in degraded]
        out.append("")
    if faults:
        out += ["## Provider faults survived", "", "| role | " + " | ".join(FAULT_LABELS[k] for k in FAULT_KINDS)
                + " |", "|---|" + "---|" * len(FAULT_KINDS)]
        out += [f"| {role} | " + " | ".join(str(counts[k]) for k in FAULT_KINDS) + " |"
                for role, counts in faults.items()]
        out.append("")
    return out


# --- markdown ------------------------------------------------------------------------------------


def _cell(text: str, width: int = 80) -> str:
    return _short(text, width).replace("|", "\\|")


def summary_markdown(records: list[ExperimentRecord], title: str = "Research summary",
                     plot: str | None = "progress.png") -> str:
    """What was tried, what worked (kept gains; simplifications kept within noise apart), counts, lessons, cost.

    `plot`: the progress plot to show, relative to where the markdown is written (report.md sits next to
    progress.png in a run's directory); None leaves it out.
    """
    if not records:
        return f"# {title}\n\nNo experiments yet.\n"
    counts = Counter(r.status for r in records)
    stats = baseline_stats(records)
    gains = [r for _, r in in_id_order(records) if r.status == "keep" and not is_simpler_keep(r)]
    simpler = [r for _, r in in_id_order(records) if is_simpler_keep(r)]
    out = [f"# {title}", ""]

    head = f"**{len(records)} experiments**: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    out += [head, ""]
    out += _health_markdown(records)
    if plot:
        out += [f"![progress: val_bpb per experiment id, baselines as a band, best kept so far]({plot})", ""]
    if stats is not None:
        mean, sigma, n = stats
        steps = [r.num_steps for r in records if r.status == "baseline" and r.num_steps is not None]
        at = f"; {min(steps)}-{max(steps)} optimizer steps" if steps else ""
        out.append(f"- Baseline mean val_bpb: {mean:.6f} ± {sigma:.6f} (σ over {n} run{'s' * (n > 1)}{at})")
    out.append(f"- {best_line(records)[0].upper()}{best_line(records)[1:]}")
    out.append("")

    out += ["## What worked", ""]
    if gains:
        out += ["| id | commit | val_bpb | delta | steps | change |", "|---|---|---|---|---|---|"]
        out += [f"| {r.exp_id} | `{r.commit[:7]}` | {_fmt(r.val_bpb)} | {_fmt(r.delta, signed=True)} | "
                f"{_steps(r)} | {_cell(r.description)} |" for r in gains]
    else:
        out.append("Nothing was kept as a gain: no change beat the best by more than the noise.")
    out.append("")
    if simpler:
        out += ["## Kept as simpler, within noise", "",
                "Shorter train.py at a val_bpb equal to the best within the noise band (confirmed by a re-run, the "
                "band narrow against the effects seen): kept for less code, not for a gain.", ""]
        out += [f"- **{r.exp_id}** {_short(r.description, 80)}: kept as simpler, within noise "
                f"(Δ {_fmt(r.delta, signed=True)}; {r.lines_removed - r.lines_added} line(s) shorter)"
                for r in simpler]
        out.append("")

    out += ["## Status counts", "", "| status | count |", "|---|---|"]
    out += [f"| {s} | {counts[s]} |" for s in STATUSES if counts[s]]
    out.append("")

    out += _by_category(records)

    out += ["## What was tried", "", "In id order; `#` is the order they were decided in.", "",
            "| id | # | status | rule | category | val_bpb | delta | steps | train s | description |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for n, r in in_id_order(records):
        status = "keep (simpler)" if is_simpler_keep(r) else r.status
        out.append(f"| {r.exp_id} | {n} | {status} | {_cell(r.rule or '–', 40)} | {r.category or '–'} | "
                   f"{_fmt(r.val_bpb)} | {_fmt(r.delta, signed=True)} | {_steps(r)} | {_seconds(r)} | "
                   f"{_cell(r.description)} |")
    out.append("")

    refused = [r for r in records if r.status in NOT_TRAINED]
    if refused:
        out += ["## Refused before training", ""]
        out += [f"- **{r.exp_id}** {r.status}" + (f" by `{r.rule}`" if r.rule else "")
                + f": {_short(r.description, 60)}: {_short(r.decision_reason or 'no reason recorded', 200)}"
                for r in refused]
        out.append("")

    crashes = [r for r in records if r.status == "crash"]
    if crashes:
        out += ["## Crashes", ""]
        out += [f"- **{r.exp_id}** {_short(r.description, 60)}: {_short(r.error or 'no reason recorded', 160)}"
                for r in crashes]
        out.append("")

    lessons = [r for r in records if r.lesson.strip()]
    if lessons:
        out += ["## Lessons", ""]
        out += [f"- **{r.exp_id}** ({r.status}): {' '.join(r.lesson.split())}" for r in lessons]
        out.append("")

    tokens_in = sum(r.tokens_in for r in records)
    tokens_out = sum(r.tokens_out for r in records)
    usd = sum(r.usd for r in records)
    train_s = sum(r.wall_seconds or 0.0 for r in records)
    out += ["## Cost", "",
            f"- LLM tokens: {tokens_in:,} in, {tokens_out:,} out; ${usd:.2f}",
            f"- Training wall-clock: {train_s / 60:.1f} min over {sum(r.wall_seconds is not None for r in records)} runs",
            ""]
    return "\n".join(out)


def _steps(r: ExperimentRecord) -> str:
    return "–" if r.num_steps is None else str(r.num_steps)


def _seconds(r: ExperimentRecord) -> str:
    return "–" if r.training_seconds is None else f"{r.training_seconds:.1f}"


def _by_category(records: list[ExperimentRecord]) -> list[str]:
    """Which kinds of change were tried, how often each was kept, and the best single gain of each."""
    tried = [r for r in records if r.status != "baseline"]
    if not tried:
        return []
    out = ["## What was tried, by category", "", "| category | tried | trained | kept | best gain | crashed or refused |",
           "|---|---|---|---|---|---|"]
    categories = Counter(r.category or "other" for r in tried)
    for category, n in categories.most_common():
        mine = [r for r in tried if (r.category or "other") == category]
        gains = [r.delta for r in mine if r.status == "keep" and not is_simpler_keep(r) and r.delta is not None]
        trained = sum(r.status in ("keep", "discard", "crash") for r in mine)
        failed = sum(r.status in ("crash", *NOT_TRAINED) for r in mine)
        out.append(f"| {_cell(category, 30)} | {n} | {trained} | {sum(r.status == 'keep' for r in mine)} | "
                   f"{_fmt(min(gains), signed=True) if gains else '–'} | {failed} |")
    out.append("")
    return out


# --- terminal ------------------------------------------------------------------------------------


WIDE_TABLE = 120  # terminal columns from which the table also shows the commit and the memory


def results_table(records: list[ExperimentRecord], title: str = "experiments", width: int | None = None) -> Table:
    """The results as a rich table for the terminal, in id order (`#`: the order they were decided in).

    Numbers are never cut: on a terminal narrower than WIDE_TABLE the commit and memory columns (both in
    results.tsv) give way and the description wraps.
    """
    wide = width is None or width >= WIDE_TABLE
    table = Table(title=title, header_style="bold", box=box.HEAVY_HEAD if wide else box.SIMPLE_HEAD,
                  pad_edge=wide, collapse_padding=not wide)
    rows = []
    for n, r in in_id_order(records):
        # Text, not markup strings: a description like "[wd] 0.1" must print as written
        status = Text("keep (simpler)" if is_simpler_keep(r) else r.status, style=_STATUS_STYLE.get(r.status, ""))
        rows.append({"id": Text(r.exp_id), "#": str(n), "commit": r.commit[:7], "status": status,
                     "val_bpb": _fmt(r.val_bpb), "delta": _fmt(r.delta, signed=True), "steps": _steps(r),
                     "train s": _seconds(r), "mem GB": f"{r.memory_gb:.1f}",
                     "description": Text(_short(r.description, 70))})
    columns = [("id", "left"), ("#", "right"), ("commit", "left"), ("status", "left"), ("val_bpb", "right"),
               ("delta", "right"), ("steps", "right"), ("train s", "right"), ("mem GB", "right"),
               ("description", "left")]
    if not wide:
        columns = [c for c in columns if c[0] not in ("commit", "mem GB")]
    for name, justify in columns:
        if name == "description":
            table.add_column(name, justify=justify, ratio=1)
        else:  # as wide as its longest cell: rich shrinks the description, never a number
            longest = max([len(name), *(len(str(row[name])) for row in rows)])
            table.add_column(name, justify=justify, no_wrap=True, min_width=longest)
    for row in rows:
        table.add_row(*(row[name] for name, _ in columns))
    return table
