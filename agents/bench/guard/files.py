"""Files: `no-escape` for writes and loaded state, `no-val-data` for reads.

No file writes, except `torch.save(obj, "<name>.pt")` with a bare literal file name: a checkpoint lands in the
directory the runner starts train.py in and cannot overwrite code, data or results. Nothing is loaded back
(`torch.load` is refused): state carried over from another run would escape the time budget. Data comes from
make_dataloader, never from reading files directly. (Processes, sockets and downloads are imports: modules.py.)
"""

from __future__ import annotations

import ast
from pathlib import PurePosixPath

from agents.bench.guard.policy import (
    CHECKPOINT_SUFFIXES,
    FILE_READERS,
    FILE_WRITERS,
    LOAD_CALLS,
    READ_CALLS,
    WRITE_CALLS,
)
from agents.bench.guard.program import Program, keyword, literal_str


def check(p: Program) -> None:
    for node in p.of(ast.Call):
        qual = p.resolve(node.func) or ""
        if qual == "builtins.open":
            _check_open(p, node)
        elif qual == "builtins.print":
            for k in node.keywords:
                if k.arg == "file" and p.resolve(k.value) not in ("sys.stdout", "sys.stderr"):
                    p.hit("no-escape", node, "print(file=...) writes somewhere other than stdout/stderr")
        if qual == "torch.save":
            _check_torch_save(p, node)
        elif qual in WRITE_CALLS:
            p.hit("no-escape", node, f"{qual} writes a file; only torch.save to a bare *.pt file name is allowed")
        elif qual in READ_CALLS:
            p.hit("no-val-data", node, f"{qual} reads files directly; data comes from make_dataloader")
        elif qual in LOAD_CALLS:
            p.hit("no-escape", node, f"{qual} loads saved state: training carried over from another run escapes "
                                     "the time budget")
        if isinstance(node.func, ast.Attribute):
            if node.func.attr in FILE_WRITERS:
                p.hit("no-escape", node, f".{node.func.attr}() changes the file system")
            elif node.func.attr in FILE_READERS:
                p.hit("no-val-data", node, f".{node.func.attr}() reads files directly; data comes from make_dataloader")


def _check_open(p: Program, node: ast.Call) -> None:
    mode = keyword(node, "mode", 1)
    text = "r" if mode is None else literal_str(mode)
    if text is None or set(text) & set("wax+"):
        p.hit("no-escape", node, "open() for writing: train.py writes no files (torch.save to a bare *.pt "
                                 "file name excepted)")
    else:
        p.hit("no-val-data", node, "open() reads files directly; data comes from make_dataloader")


def _check_torch_save(p: Program, node: ast.Call) -> None:
    path = keyword(node, "f", 1)
    text = literal_str(path) if path is not None else None
    if text is None or PurePosixPath(text).name != text.replace("\\", "/") or not text.endswith(CHECKPOINT_SUFFIXES):
        p.hit("no-escape", node, "torch.save may only write a bare file name ending in .pt or .pth (the "
                                 "working directory, no other folder, no other kind of file)")
