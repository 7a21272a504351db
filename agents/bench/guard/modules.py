"""What train.py may import, and what it may use of the modules it may only use in part (os, sys, gc, prepare).

`allowed-imports` is the family's own rule; a forbidden module or attribute is reported under the rule that
says why (`no-escape` for subprocess, `no-indirection` for importlib, ...), and an import falls back to
`allowed-imports` when that rule is switched off: it is still a new import.
"""

from __future__ import annotations

import ast

from agents.bench.guard.policy import (
    ALLOWED_MODULES,
    ESCAPE_MODULES,
    ESCAPE_TORCH,
    GC_ALLOWED,
    INDIRECTION_MODULES,
    OS_ALLOWED,
    OS_ENVIRONMENT,
    PREPARE_PUBLIC,
    PREPARE_RESULT_NAME,
    PREPARE_VAL_NAME,
    SYS_ALLOWED,
)
from agents.bench.guard.program import Program


def check(p: Program) -> None:
    for node in p.of(ast.Import):
        for a in node.names:
            _check_module(p, node, a.name)
    for node in p.of(ast.ImportFrom):
        _check_import_from(p, node)
    for node in p.of(ast.Attribute):
        base = p.resolve(node.value)
        if base is None or (base == "os" and node.attr in OS_ENVIRONMENT):
            continue  # the environment: metrics.py
        if base in ("os", "sys", "gc", "prepare") or f"{base}.{node.attr}" in ESCAPE_TORCH:
            check_module_attr(p, node, base, node.attr)


def _check_import_from(p: Program, node: ast.ImportFrom) -> None:
    if node.level:
        p.hit("allowed-imports", node, "relative imports are not allowed: train.py is a single file")
        return
    module = node.module or ""
    if module == "prepare":
        for a in node.names:
            if a.name != "*":
                check_prepare_name(p, node, a.name)
        return
    _check_module(p, node, module)
    for a in node.names:
        check_module_attr(p, node, module, a.name)


def _check_module(p: Program, node: ast.AST, module: str) -> None:
    root = module.split(".")[0]
    if root in ESCAPE_MODULES or module.startswith(ESCAPE_TORCH):
        p.hit("no-escape", node, f"imports {module}: train.py may not start processes, use the network or files",
              fallback="allowed-imports")
    elif root in INDIRECTION_MODULES:
        p.hit("no-indirection", node, f"imports {module}, which only serves to reach code indirectly",
              fallback="allowed-imports")
    elif root not in ALLOWED_MODULES:
        p.hit("allowed-imports", node,
              f"imports {module}, which is not allowed (allowed: {', '.join(sorted(ALLOWED_MODULES))})")


def check_prepare_name(p: Program, node: ast.AST, name: str) -> None:
    if name in PREPARE_PUBLIC:
        return
    if PREPARE_VAL_NAME.search(name):
        p.hit("no-val-data", node, f"uses prepare.{name}: validation data is reached only through evaluate_bpb")
    elif PREPARE_RESULT_NAME.search(name):
        p.hit("no-metric-forgery", node, f"uses prepare.{name}, part of how the harness's result is produced")
    else:
        p.hit("allowed-imports", node,
              f"uses prepare.{name}, not prepare's public API ({', '.join(sorted(PREPARE_PUBLIC))})")


def check_module_attr(p: Program, node: ast.AST, module: str, attr: str) -> None:
    """Policy for `module.attr` on the few modules train.py may only use in part."""
    if module == "os" and attr not in OS_ALLOWED:
        if attr in OS_ENVIRONMENT:
            p.hit("no-metric-forgery", node, f"os.{attr}: the environment is the harness's channel to prepare")
        else:
            p.hit("no-escape", node, f"os.{attr}: train.py may use os only for {', '.join(sorted(OS_ALLOWED))}")
    elif module == "sys" and attr not in SYS_ALLOWED:
        p.hit("no-patching", node, f"sys.{attr} reaches into the interpreter that runs prepare's evaluator")
    elif module == "gc" and attr not in GC_ALLOWED:
        p.hit("no-indirection", node, f"gc.{attr} reaches other objects indirectly; only collection is allowed")
    elif module == "prepare":
        check_prepare_name(p, node, attr)
    elif f"{module}.{attr}".startswith(ESCAPE_TORCH):
        p.hit("no-escape", node, f"{module}.{attr}: no processes, distributed workers or downloads")
