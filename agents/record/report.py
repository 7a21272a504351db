"""Reports on a run: progress.png, a markdown summary and a terminal table.

All three read only `ExperimentRecord`s, so they can be rebuilt from results.parquet at any time.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table
from rich.text import Text

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


def _best_chain(records: list[ExperimentRecord]) -> list[tuple[int, float]]:
    """(index, reference val_bpb) at every baseline or kept record, as the keep rule saw it: the mean of
    the baseline runs, then the score of each kept commit (a kept deletion may score a hair worse)."""
    chain, baselines = [], []
    for i, r in enumerate(records, start=1):
        if r.val_bpb is None:
            continue
        if r.status == "baseline":
            baselines.append(r.val_bpb)
            chain.append((i, statistics.fmean(baselines)))
        elif r.status == "keep":
            chain.append((i, r.val_bpb))
    return chain


# --- progress.png --------------------------------------------------------------------------------


def plot_progress(records: list[ExperimentRecord], path: Path, title: str = "") -> Path:
    """val_bpb per experiment: kept ones highlighted and labelled, the rest grey, best-so-far as a step line.

    Crashed runs and refused proposals have no val_bpb: they are drawn as markers along the bottom edge,
    with their counts in the legend. Runs far worse than the kept ones are pinned to the top edge so
    they do not squash the interesting range.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(12, 6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlabel("experiment #")
    ax.set_ylabel("val_bpb (lower is better)")
    ax.grid(True, alpha=0.25)

    scored = [(i, r) for i, r in enumerate(records, start=1) if r.val_bpb is not None]
    if not scored:
        ax.text(0.5, 0.5, "no scored experiments yet", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(title or "autoresearch progress")
        fig.savefig(path)
        return path

    values = [r.val_bpb for _, r in scored]
    frontier = [r.val_bpb for _, r in scored if r.status in ("baseline", "keep")] or values
    low = min(values)
    # show up to 1.5x the frontier's own range above it; anything worse is pinned to the top edge
    span = max(max(frontier) - low, 0.01 * abs(low), 1e-3)
    ceiling = min(max(values), max(frontier) + 1.5 * span)
    margin = (ceiling - low) * 0.08 or span * 0.1
    ax.set_ylim(low - 3 * margin, ceiling + margin)  # the band below `low` holds the unscored markers
    ax.set_xlim(0, len(records) + 1)

    def plot_group(statuses: tuple[str, ...], **style) -> None:
        pts = [(i, r.val_bpb) for i, r in scored if r.status in statuses]
        inside = [(i, v) for i, v in pts if v <= ceiling]
        if inside:
            ax.scatter(*zip(*inside, strict=True), **style)

    off_scale = [i for i, r in scored if r.val_bpb > ceiling]
    if off_scale:
        ax.scatter(off_scale, [ceiling] * len(off_scale), marker="^", color="#808080", s=30, zorder=2,
                   label=f"off the scale ({len(off_scale)})")

    others = tuple(s for s in STATUSES if s not in ("baseline", "keep"))
    plot_group(others, color="#b0b0b0", s=22, zorder=2, label=f"discarded ({_count(records, others, scored=True)})")
    plot_group(("baseline",), color="#1f77b4", marker="s", s=55, zorder=4,
               label=f"baseline ({_count(records, ('baseline',), scored=True)})")
    plot_group(("keep",), color="#2ca02c", s=70, edgecolors="black", linewidths=0.6, zorder=5,
               label=f"kept ({_count(records, ('keep',), scored=True)})")

    baselines = [r.val_bpb for r in records if r.status == "baseline" and r.val_bpb is not None]
    if baselines:
        ax.axhline(statistics.fmean(baselines), color="#1f77b4", linestyle=":", linewidth=1, zorder=1)

    chain = _best_chain(records)
    if chain:
        xs = [i for i, _ in chain] + [len(records)]
        ys = [b for _, b in chain] + [chain[-1][1]]
        ax.step(xs, ys, where="post", color="#2ca02c", linewidth=1.5, alpha=0.8, zorder=3, label="best so far")

    for i, r in scored:
        if r.status == "keep" and r.val_bpb <= ceiling:
            ax.annotate(_short(r.description, 40), (i, r.val_bpb), xytext=(5, 6), textcoords="offset points",
                        fontsize=7, rotation=25, color="#1b5e20")

    band = low - 2 * margin
    crashed = [i for i, r in enumerate(records, start=1) if r.status == "crash" and r.val_bpb is None]
    refused = [i for i, r in enumerate(records, start=1) if r.status in NOT_TRAINED]
    if crashed:
        ax.scatter(crashed, [band] * len(crashed), marker="x", color="#d62728", s=30, zorder=2,
                   label=f"crashed ({len(crashed)})")
    if refused:
        ax.scatter(refused, [band] * len(refused), marker="|", color="#ff9f1c", s=60, zorder=2,
                   label=f"refused before training ({len(refused)})")

    kept = sum(r.status == "keep" for r in records)
    best = chain[-1][1] if chain else low
    ax.set_title(title or "autoresearch progress")
    ax.text(0.01, 0.98, f"{len(records)} experiments, {kept} kept, best {best:.6f}", transform=ax.transAxes,
            va="top", fontsize=9)
    ax.legend(loc="best", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    return path


def _count(records: list[ExperimentRecord], statuses: tuple[str, ...], scored: bool = False) -> int:
    return sum(r.status in statuses and (not scored or r.val_bpb is not None) for r in records)


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
    """What was tried, what worked (the kept chain with deltas), counts, lessons, and what it cost.

    `plot`: the progress plot to show, relative to where the markdown is written (report.md sits next to
    progress.png in a run's directory); None leaves it out.
    """
    if not records:
        return f"# {title}\n\nNo experiments yet.\n"
    counts = Counter(r.status for r in records)
    baselines = [r.val_bpb for r in records if r.status == "baseline" and r.val_bpb is not None]
    kept = [r for r in records if r.status == "keep"]
    chain = _best_chain(records)
    out = [f"# {title}", ""]

    head = f"**{len(records)} experiments**: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts[s])
    out += [head, ""]
    out += _health_markdown(records)
    if plot:
        out += [f"![progress: val_bpb per experiment, best so far]({plot})", ""]
    if baselines:
        spread = f", spread ±{statistics.stdev(baselines):.6f}" if len(baselines) > 1 else ""
        base = statistics.fmean(baselines)
        out.append(f"- Baseline val_bpb: {base:.6f} (mean of {len(baselines)} run{'s' * (len(baselines) > 1)}{spread})")
    if chain:
        best = chain[-1][1]
        line = f"- Best val_bpb: {best:.6f}"
        if baselines:
            gain = best - statistics.fmean(baselines)
            line += f" ({gain:+.6f}, {100 * gain / statistics.fmean(baselines):+.2f} % vs baseline)"
        out.append(line)
    out.append("")

    out += ["## What worked", ""]
    if kept:
        out += ["| # | experiment | commit | val_bpb | delta | change |", "|---|---|---|---|---|---|"]
        previous = statistics.fmean(baselines) if baselines else None
        for n, r in enumerate(kept, start=1):
            delta = r.delta
            if delta is None and previous is not None and r.val_bpb is not None:
                delta = r.val_bpb - previous
            out.append(f"| {n} | {r.exp_id} | `{r.commit[:7]}` | {_fmt(r.val_bpb)} | {_fmt(delta, signed=True)} "
                       f"| {_cell(r.description)} |")
            previous = r.val_bpb if r.val_bpb is not None else previous
    else:
        out.append("Nothing was kept: no change beat the baseline by more than the noise.")
    out.append("")

    out += ["## Status counts", "", "| status | count |", "|---|---|"]
    out += [f"| {s} | {counts[s]} |" for s in STATUSES if counts[s]]
    out.append("")

    out += _by_category(records)

    out += ["## What was tried", "", "| id | status | rule | category | val_bpb | delta | description |",
            "|---|---|---|---|---|---|---|"]
    for r in records:
        out.append(f"| {r.exp_id} | {r.status} | {_cell(r.rule or '–', 40)} | {r.category or '–'} | "
                   f"{_fmt(r.val_bpb)} | {_fmt(r.delta, signed=True)} | {_cell(r.description)} |")
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
        gains = [r.delta for r in mine if r.status == "keep" and r.delta is not None]
        trained = sum(r.status in ("keep", "discard", "crash") for r in mine)
        failed = sum(r.status in ("crash", *NOT_TRAINED) for r in mine)
        out.append(f"| {_cell(category, 30)} | {n} | {trained} | {sum(r.status == 'keep' for r in mine)} | "
                   f"{_fmt(min(gains), signed=True) if gains else '–'} | {failed} |")
    out.append("")
    return out


# --- terminal ------------------------------------------------------------------------------------


def results_table(records: list[ExperimentRecord], title: str = "experiments") -> Table:
    """The results as a rich table for the terminal."""
    table = Table(title=title, header_style="bold")
    for name, justify in (("#", "right"), ("id", "left"), ("commit", "left"), ("status", "left"),
                          ("val_bpb", "right"), ("delta", "right"), ("mem GB", "right"), ("description", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "description")
    for n, r in enumerate(records, start=1):
        # Text, not markup strings: a description like "[wd] 0.1" must print as written
        table.add_row(
            str(n),
            Text(r.exp_id),
            r.commit[:7],
            Text(r.status, style=_STATUS_STYLE.get(r.status, "")),
            _fmt(r.val_bpb),
            _fmt(r.delta, signed=True),
            f"{r.memory_gb:.1f}",
            Text(_short(r.description, 70)),
        )
    return table
