"""`autoresearch memory ...`: search, stats, check and rebuild of the experiment memory (memory/).

search, stats and check open the memory read-only (a snapshot), so they work while a loop runs; rebuild
writes, so it needs the loop to be stopped (the writer lock says so if it is not).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from memory.embeddings import DEFAULT_EMBEDDING
from memory.store import ExperimentMemory, MemoryStoreError

DEFAULT_MEMORY_PATH = Path(".autoresearch/memory")

app = typer.Typer(no_args_is_help=True, add_completion=False)
console = Console()
err = Console(stderr=True)

PathOption = Annotated[
    Path | None, typer.Option(help="memory directory (default: crew.yaml memory.path, else .autoresearch/memory)")
]
ConfigOption = Annotated[Path, typer.Option(help="crew.yaml to read memory.path and memory.embedding from")]
EmbeddingOption = Annotated[
    str | None, typer.Option(help="embedding the memory is built with (default: crew.yaml memory.embedding)")
]


def memory_settings(config: Path, path: Path | None, embedding: str | None) -> tuple[Path, str]:
    """The memory directory and embedding: options first, then crew.yaml's `memory:` section, then defaults.
    A relative memory.path is relative to the repository (the directory of crew.yaml)."""
    section: dict = {}
    if config.exists():
        try:
            loaded = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{config} is not valid YAML: {exc}") from None
        if isinstance(loaded, dict) and isinstance(loaded.get("memory"), dict):
            section = loaded["memory"]
    if path is None:
        configured = Path(section.get("path", DEFAULT_MEMORY_PATH))
        path = configured if configured.is_absolute() else config.resolve().parent / configured
    return path, embedding or section.get("embedding", DEFAULT_EMBEDDING)


def _fail(message: str) -> None:
    err.print(f"[red]error[/]: {message}")
    raise typer.Exit(1)


def _fmt(value: float | None, spec: str) -> str:
    return format(value, spec) if value is not None else "-"


T = TypeVar("T")


def _read(path: Path, embedding: str, query: Callable[[ExperimentMemory], T]) -> T:
    """Run `query` on a read-only snapshot of the memory (safe while a run writes it)."""
    try:
        with ExperimentMemory.open(path, embedding=embedding, read_only=True) as memory:
            return query(memory)
    except (MemoryStoreError, ValueError) as exc:
        _fail(str(exc))


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="what to look for, in words")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="how many experiments to show")] = 10,
    path: PathOption = None,
    config: ConfigOption = Path("crew.yaml"),
    embedding: EmbeddingOption = None,
) -> None:
    """Past experiments nearest in meaning to QUERY (works while a run is going)."""
    path, embedding = memory_settings(config, path, embedding)
    hits = _read(path, embedding, lambda memory: memory.search(query, k=k))
    table = Table(title=f"nearest to {query!r} in {path}")
    for column in ("sim", "experiment", "status", "val_bpb", "delta", "title", "lesson / outcome"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        table.add_row(f"{hit.similarity:.2f}", hit.id, hit.status, _fmt(hit.val_bpb, ".4f"), _fmt(hit.delta, "+.4f"),
                      hit.title, hit.lesson or hit.note)
    console.print(table if hits else "memory is empty")


@app.command()
def stats(
    path: PathOption = None,
    config: ConfigOption = Path("crew.yaml"),
    embedding: EmbeddingOption = None,
) -> None:
    """How many experiments memory holds, by status and by run (works while a run is going)."""
    path, embedding = memory_settings(config, path, embedding)
    info = _read(path, embedding, lambda memory: memory.stats())
    console.print(f"[bold]{info['experiments']}[/] experiments in {info['path']} (embedding {info['embedding']})")
    if info["first"]:
        console.print(f"from {info['first']} to {info['last']}")
    statuses = Table(title="by status")
    statuses.add_column("status")
    statuses.add_column("experiments", justify="right")
    for status, n in sorted(info["by_status"].items(), key=lambda kv: -kv[1]):
        statuses.add_row(status, str(n))
    runs = Table(title="by run")
    for column in ("tag", "experiments", "best val_bpb"):
        runs.add_column(column, justify="right" if column != "tag" else "left")
    for tag, n in sorted(info["by_tag"].items()):
        runs.add_row(tag, str(n), _fmt(info["best_val_bpb_by_tag"].get(tag), ".6f"))
    console.print(statuses)
    console.print(runs)


@app.command()
def rebuild(
    parquet: Annotated[
        list[Path] | None, typer.Argument(help="results.parquet files (default: runs/*/results.parquet)")
    ] = None,
    path: PathOption = None,
    config: ConfigOption = Path("crew.yaml"),
    embedding: EmbeddingOption = None,
) -> None:
    """Rebuild the memory from results.parquet files (the loop must not be running)."""
    path, embedding = memory_settings(config, path, embedding)
    files = list(parquet) if parquet else sorted((config.resolve().parent / "runs").glob("*/results.parquet"))
    if not files:
        _fail("no results.parquet files to rebuild from (name them, or run from the repository root)")
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        _fail(f"no such results file: {', '.join(missing)}")
    try:
        with console.status(f"embedding experiments from {len(files)} file(s)..."), \
                ExperimentMemory.open(path, embedding=embedding) as memory:
            count = memory.rebuild(files)
            notices = memory.notices
    except (MemoryStoreError, ValueError) as exc:
        _fail(str(exc))
    for notice in notices:
        err.print(f"[yellow]{notice}[/]")
    console.print(f"rebuilt {path}: {count} experiments from {len(files)} results file(s)")


@app.command()
def check(
    idea: Annotated[str, typer.Argument(help="the idea's title, as the hypothesis role would write it")],
    rationale: Annotated[str, typer.Option(help="the idea's rationale (it may carry values the title leaves out)")] = "",
    change: Annotated[list[str] | None, typer.Option("--change", help="a declared change, repeatable: "
                      "NAME=VALUE for a constant, PART:TECHNIQUE for code (default: the title is read)")] = None,
    train_py: Annotated[Path | None, typer.Option("--train-py", help="read the idea against this train.py "
                                                  "(default: the repository's)")] = None,
    device: Annotated[str, typer.Option(help="the device profile values are compared on: cpu, cuda, or auto "
                                        "(this machine's)")] = "auto",
    llm: Annotated[bool, typer.Option("--llm", help="ask the LLM judge crew.yaml configures (the reviewer's model "
                                      "unless memory.judge_model names another) about changes to code")] = False,
    path: PathOption = None,
    config: ConfigOption = Path("crew.yaml"),
    embedding: EmbeddingOption = None,
) -> None:
    """What the novelty gate would say about IDEA, and why: what it changes, the experiments found with their
    fingerprints, and the judgement (works while a run is going)."""
    from agents.crew.schemas import ConstantChange, Idea, PartChange

    if not idea.strip():
        err.print("[red]error[/]: IDEA is empty: give the idea's title, e.g. 'MATRIX_LR 0.04 -> 0.03'")
        raise typer.Exit(2)
    if device not in ("cpu", "cuda", "auto"):
        err.print(f"[red]error[/]: --device must be cpu, cuda or auto, not {device!r}")
        raise typer.Exit(2)
    if device == "auto":
        from agents.assemble import detect_device

        device = detect_device()
    declared = []
    for item in change or []:
        name, eq, value = item.partition("=")
        part, colon, technique = item.partition(":")
        if eq and name.strip().isidentifier() and value.strip():
            declared.append(ConstantChange(constant=name.strip(), value=value.strip()))
        elif colon and part.strip() and technique.strip():
            declared.append(PartChange(part=part.strip(), technique=technique.strip()))
        else:
            err.print(f"[red]error[/]: --change {item!r}: write NAME=VALUE (a constant) or PART:TECHNIQUE (code)")
            raise typer.Exit(2)
    source = None
    if train_py is not None:
        try:
            source = train_py.read_text()
        except OSError as exc:
            err.print(f"[red]error[/]: cannot read --train-py {train_py}: {exc.strerror or exc}")
            raise typer.Exit(2) from None
    judge = _cli_judge(config) if llm else None
    path, embedding = memory_settings(config, path, embedding)
    proposal = Idea(title=idea, rationale=rationale, expected_effect="", category="other", changes=declared)

    def query(memory: ExperimentMemory):
        changes = memory.read_idea(proposal, source)
        verdict = memory.check_idea(proposal, train_py=source, judge=judge, device=device)
        nearest = memory.search(f"{idea}. {rationale}" if rationale else idea, k=8)
        same_targets = memory.hits([e.id for e in memory.index().lookup(changes)][:8])
        return changes, verdict, nearest, same_targets

    try:
        changes, verdict, nearest, same_targets = _read(path, embedding, query)
    except SyntaxError as exc:
        _fail(f"the train.py the idea is read against does not parse (line {exc.lineno}: {exc.msg})")
    how = {"declared": "declared", "reading": "read from its words"}.get(changes.source, changes.source)
    unsure = "" if changes.complete or changes.source != "reading" else " (the reading is not sure of all of it)"
    console.print(f"[bold]idea[/]: {idea}")
    console.print(f"[bold]changes[/] ({how}{unsure}): {changes.describe()}")
    table = Table(title="past experiments changing the same things (structure) and nearest in meaning (embedding)")
    for column in ("found by", "sim", "experiment", "status", "val_bpb", "title", "what the code changed"):
        table.add_column(column, overflow="fold")
    for found_by, hits in (("structure", same_targets), ("embedding", nearest)):
        for hit in hits:
            table.add_row(found_by, f"{hit.similarity:.2f}" if hit.similarity else "-", hit.id, hit.status,
                          _fmt(hit.val_bpb, ".4f"), hit.title, hit.describe_change() or "(not coded)")
    console.print(table if (nearest or same_targets) else "memory is empty")
    colour = "green" if verdict.novel else "red"
    console.print(f"[bold {colour}]{'admitted' if verdict.novel else 'refused'}[/] ({verdict.kind}, judged by "
                  f"{verdict.judged_by or 'structure'}): {verdict.message}")
    if verdict.context:
        console.print(verdict.context)
    if verdict.novel and not changes.complete and judge is None and verdict.related:
        console.print("The structure cannot tell whether this repeats the related experiments above: name its "
                      "changes with --change, or let the LLM judge decide with --llm.")


def _cli_judge(config: Path):
    """The LLM judge crew.yaml asks for, or a clear error."""
    from agents.config import ConfigError, load_config
    from agents.crew.llm.usage import UsageLedger
    from memory.judge import judge_for_crew

    try:
        crew_config = load_config(config)
    except (ConfigError, OSError) as exc:
        err.print(f"[red]error[/]: --llm needs a crew.yaml: {exc}")
        raise typer.Exit(2) from None

    class _Crew:  # what judge_for_crew reads from a crew
        def __init__(self) -> None:
            self.config, self.ledger = crew_config, UsageLedger()

    try:
        judge = judge_for_crew(_Crew())
    except Exception as exc:
        err.print(f"[red]error[/]: cannot build the LLM judge: {exc}")
        raise typer.Exit(2) from None
    if judge is None:
        err.print("[yellow]the reviewer's model is offline: the structure judges[/]")
    return judge
