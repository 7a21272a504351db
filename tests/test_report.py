"""agents.record.report: the progress plot, the markdown summary, the terminal table."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from rich.console import Console

from agents.record.report import plot_progress, progress_figure, results_table, summary_markdown
from agents.record.results import ExperimentRecord


def rec(n: int, status: str, bpb: float | None, desc: str, **kw) -> ExperimentRecord:
    return ExperimentRecord(exp_id=f"exp{n:03d}", tag="t", status=status, description=desc, val_bpb=bpb,
                            commit=f"{n:07x}abcdef", **kw)


RECORDS = [
    rec(1, "baseline", 1.0100, "baseline", wall_seconds=70.0),
    rec(2, "baseline", 1.0120, "baseline (seed 2)", wall_seconds=70.0),
    rec(3, "discard", 1.0150, "MATRIX_LR 0.04 -> 0.06", delta=0.004, lesson="higher matrix LR hurts at this scale",
        tokens_in=1200, tokens_out=300, usd=0.01),
    rec(4, "keep", 0.9950, "DEPTH 4 -> 6 | wider", delta=-0.016, lesson="depth helps", tokens_in=1000, usd=0.02,
        category="architecture"),
    rec(5, "crash", None, "[bf16] autocast everywhere", error="out of memory"),
    rec(6, "veto", None, "evaluate on the training split"),
    rec(7, "discard", 3.5000, "remove the warmup entirely"),  # an outlier far above the rest
    rec(8, "keep", 0.9870, "warmdown 0.5", delta=-0.008, lesson="longer warmdown helps"),
    rec(9, "repeat", None, "DEPTH 4 -> 6 again"),
]


def test_progress_png_decodes_and_is_not_blank(tmp_path):
    path = plot_progress(RECORDS, tmp_path / "sub" / "progress.png", title="autoresearch/t")
    assert path == tmp_path / "sub" / "progress.png"
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 600
    assert float(np.var(image[..., :3])) > 1e-3
    # something green (the kept points / best-so-far line) is drawn: G high, R and B low
    rgb = image[..., :3]
    assert np.any((rgb[..., 1] > 0.5) & (rgb[..., 0] < 0.3) & (rgb[..., 2] < 0.3))


def test_every_trained_experiment_is_inside_the_frame_with_its_value_where_clipped():
    fig = progress_figure(RECORDS, title="autoresearch/t")
    ax = fig.axes[0]
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    drawn = [tuple(p) for c in ax.collections for p in c.get_offsets()]
    assert drawn and all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in drawn), "a marker outside the axes"
    texts = [t.get_text() for t in ax.texts]
    for r in RECORDS:
        if r.val_bpb is None:
            continue
        x = int(r.exp_id[3:])
        if y0 <= r.val_bpb <= y1:
            assert (x, r.val_bpb) in drawn, f"{r.exp_id} is not drawn at its value"
        else:  # clipped: its marker sits at the top edge, inside, with the value written beside it
            assert any(px == x for px, _ in drawn) and f"{r.val_bpb:.4f}" in texts, f"{r.exp_id} lost its value"
    assert 3.5 > y1  # the outlier was clipped rather than squashing the rest
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, \
            f"label {text.get_text()!r} runs out of the frame"
    assert ax.get_xlabel() == "experiment id"
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert any(label.startswith("baseline mean ± σ") for label in labels) and "best kept so far" in labels


def test_the_best_so_far_line_only_steps_down_and_only_on_a_keep():
    fig = progress_figure(RECORDS)
    line = next(line for line in fig.axes[0].lines if line.get_label() == "best kept so far")
    ys = list(line.get_ydata())
    assert ys[0] == pytest.approx(1.011) and all(b <= a for a, b in zip(ys, ys[1:], strict=False))  # from the baseline mean, down
    steps = {x for x, a, b in zip(line.get_xdata()[1:], ys, ys[1:], strict=False) if b < a}
    assert steps == {4, 8}  # the two keeps


def test_progress_png_with_nothing_scored(tmp_path):
    path = plot_progress([rec(1, "veto", None, "x")], tmp_path / "p.png")
    image = mpimg.imread(path)
    assert float(np.var(image[..., :3])) > 0  # axes and the "no scored experiments" note


def test_summary_markdown_names_what_worked():
    md = summary_markdown(RECORDS)
    assert md.startswith("# Research summary")
    assert "**9 experiments**: 2 baseline, 2 keep, 2 discard, 1 crash, 1 veto, 1 repeat" in md
    assert "Baseline mean val_bpb: 1.011000 ± 0.002022 (σ over 2 runs)" in md  # σ as the keep rule sees it
    assert "Best val_bpb: 0.987000 (experiment exp008, commit 0000008, -0.024000 (-2.37 %) vs the baseline mean" in md
    worked = md.split("## What worked")[1].split("##")[0]
    assert "| exp004 | `0000004` | 0.995000 | -0.016000 | – | DEPTH 4 -> 6 \\| wider |" in worked
    assert "| exp008 |" in worked and "warmdown 0.5" in worked
    assert "MATRIX_LR" not in worked
    assert "exp005** [bf16] autocast everywhere: out of memory" in md
    assert "- **exp003** (discard): higher matrix LR hurts at this scale" in md
    assert "LLM tokens: 2,200 in, 300 out; $0.03" in md
    assert summary_markdown([]).endswith("No experiments yet.\n")


def test_a_simplification_kept_within_noise_is_reported_as_such_never_as_a_gain():
    records = [
        rec(1, "baseline", 1.0100, "baseline"),
        rec(2, "baseline", 1.0120, "baseline (seed 2)"),
        rec(3, "keep", 1.0150, "Remove the logit soft-cap", delta=0.004, kept_as="simpler", lines_removed=3,
            decision_reason="keep: kept as simpler, within noise (delta +0.004000)"),
        # an older record: no kept_as, the reason tells
        rec(4, "keep", 1.0160, "Drop Nesterov momentum", delta=0.001, lines_removed=1,
            decision_reason="keep: 1 line(s) shorter at equal val_bpb within noise"),
    ]
    md = summary_markdown(records)
    worked = md.split("## What worked")[1].split("\n## ")[0]
    assert "soft-cap" not in worked and "Nesterov" not in worked and "Nothing was kept as a gain" in worked
    simpler = md.split("## Kept as simpler, within noise")[1].split("\n## ")[0]
    assert "**exp003** Remove the logit soft-cap: kept as simpler, within noise (Δ +0.004000; 3 line(s) shorter)" \
        in simpler and "exp004" in simpler
    assert "Best val_bpb" not in md and "No change beat the start: baseline mean val_bpb 1.011000" in md
    assert "| exp003 | 3 | keep (simpler) |" in md


def test_tables_list_experiments_in_id_order_with_the_decided_order_beside():
    records = [rec(1, "baseline", 1.01, "baseline"), rec(3, "discard", 1.02, "late id, decided first",
                                                          num_steps=305, training_seconds=19.9),
               rec(2, "keep", 0.99, "early id, decided second", delta=-0.02, kept_as="gain")]
    md = summary_markdown(records)
    tried = md.split("## What was tried\n")[1]
    assert tried.index("| exp002 | 3 | keep |") < tried.index("| exp003 | 2 | discard |")
    assert "| 1.020000 | +0.000000 | 305 | 19.9 |" not in tried  # delta is None here: shown as –
    assert "| 1.020000 | – | 305 | 19.9 | late id, decided first |" in tried
    console = Console(record=True, width=200)
    console.print(results_table(records))
    text = console.export_text()
    assert text.index("exp002") < text.index("exp003") and "305" in text and "19.9" in text


def test_summary_without_kept_experiments_says_so():
    md = summary_markdown(RECORDS[:3])
    assert "Nothing was kept" in md


def test_results_table_renders_every_record():
    console = Console(record=True, width=200)
    console.print(results_table(RECORDS))
    text = console.export_text()
    for r in RECORDS:
        assert r.exp_id in text
    assert "[bf16] autocast everywhere" in text  # brackets are not taken as markup
    assert "0.987000" in text and "-0.008000" in text


def test_model_health_tops_the_report_and_refusals_name_their_rule():
    import json

    degraded = ("coder: openai/local -> offline policy after 3 failures in a row of openai/local, from experiment "
                "0004 (last: LLMCallError)")
    records = [
        rec(1, "baseline", 1.01, "baseline"),
        rec(2, "veto", None, "edit prepare.py", rule="only-train-py", decision_reason="the edit touches prepare.py"),
        rec(3, "discard", 1.02, "DEPTH 2 -> 3", faults=json.dumps({"coder": {"server_error": 2, "retries": 2}})),
        rec(4, "discard", 1.03, "offline idea", degraded_roles=degraded,
            faults=json.dumps({"coder": {"server_error": 1, "timeout": 1}, "hypothesis": {"malformed": 1}})),
    ]
    md = summary_markdown(records)
    warning = md.index("## Warning: roles that ran without their model")
    assert warning < md.index("## What worked") and "from experiment 0004" in md[warning:]
    faults = md[md.index("## Provider faults survived"):]
    assert "| coder | 0 | 3 | 1 | 0 | 0 | 0 | 2 |" in faults and "| hypothesis | 0 | 0 | 0 | 0 | 1 | 0 | 0 |" in faults
    assert "| exp002 | 2 | veto | only-train-py |" in md
    assert "**exp002** veto by `only-train-py`: edit prepare.py: the edit touches prepare.py" in md
    assert "Warning" not in summary_markdown(RECORDS)  # nothing degraded, nothing said


def test_the_console_line_of_a_refusal_names_the_rule_and_a_lost_model_is_a_banner():
    from agents.live import LiveView
    from agents.loop import LoopEvent

    console = Console(record=True, width=200)
    view = LiveView(console, "t", 10.0, enabled=False)
    view.handle(LoopEvent("record", "0002", "veto", record=rec(2, "veto", None, "edit prepare.py",
                                                                rule="only-train-py")))
    view.handle(LoopEvent("degraded", "0004", "coder: openai/local -> offline policy after 3 failures"))
    text = console.export_text()
    assert "exp002  veto" in text and "edit prepare.py [only-train-py]" in text
    assert "MODEL GIVEN UP coder: openai/local -> offline policy" in text
    assert view.banners == {"coder": "coder: openai/local -> offline policy after 3 failures"}


@pytest.mark.parametrize("width", [80, 100, 200])
def test_the_results_table_never_cuts_a_number_on_a_narrow_terminal(width):
    records = [rec(n, "discard", 1.8 + n / 1000, "SCALAR_LR 0.5 -> 0.35 and a long description that must wrap",
                   delta=-0.041176, num_steps=382, training_seconds=19.9) for n in range(1, 5)]
    console = Console(record=True, width=width)
    console.print(results_table(records, width=width))
    text = console.export_text()
    for r in records:
        assert f"{r.val_bpb:.6f}" in text and "-0.041176" in text and "382" in text and "19.9" in text
    assert "…" not in text.split("description")[0]  # no header cut either
    assert ("commit" in text) == (width >= 120)
