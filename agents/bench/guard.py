"""The reviewer's deterministic rules: refuse an edit of train.py that games the experiment, before any GPU time.

`check_edit` parses the new train.py with `ast` (and compares it with the old one where a rule is about the
change) and returns a `GuardReport`: every violation names its rule, the line and why. The rules are named
(`RULES`) and can be switched off one by one from crew.yaml's `guard:` section; all are on by default.

Policy decisions the rules encode (kept here so the reviewer and the coder can read them in one place):
- Names are resolved through the file's imports and simple aliases (`import prepare as p`, `F = torch.nn.functional`,
  `tok = Tokenizer.from_directory()`), so `p.evaluate_bpb = ...` is the same offence as `prepare.evaluate_bpb = ...`.
  Objects made by prepare (the tokenizer, the dataloader) count as prepare's too: the evaluator relies on them.
- File writes: none, except `torch.save(obj, "<name>.pt")` with a bare literal file name: a checkpoint lands in
  the directory the runner starts train.py in and cannot overwrite code, data or results. Nothing is loaded back
  (`torch.load` is refused): state carried over from another run would escape the time budget.
- `os` is allowed for `os.cpu_count`, `os.path` and writing a few torch/CUDA runtime knobs into `os.environ`
  (literal key and value, e.g. PYTORCH_CUDA_ALLOC_CONF); any other environment access is metric forgery, because
  the environment is the harness's channel to prepare.py (time budget, seed, result path).
- Seeds come from `prepare.SEED`: the harness varies it between re-runs to measure noise, so a hard-coded seed
  would make every re-run agree with itself. An edit that only changes seeds or data order is refused, and so
  is an edit that changes no code at all (comments and formatting only): its result could only be noise.
- `evaluate_bpb` is called once, outside any loop, with the tokenizer prepare loaded; the summary line `val_bpb:`
  prints the name assigned from that call and nothing else. (The harness reads the evaluator's record, not the
  print; the print rule keeps the log honest for the humans and the analyst who read it.)
- The time budget: training stops on a comparison with TIME_BUDGET as it is; the clock compared with it only
  grows by measured time; an edit may not add or widen the `if` that leaves warm-up steps uncounted; and no
  backward pass happens after the loop the budget stops. What static analysis cannot see (a clock started late
  in the step, a helper that trains after the loop) is bounded by the runner's hard kill.
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

EDITABLE_FILE = "train.py"
LOCKED_FILE = "prepare.py"

RULES: dict[str, str] = {
    "only-train-py": "the edit touches train.py and no other file",
    "prepare-hash": "prepare.py is byte for byte the locked file (checked by the loop before and after every run)",
    "compiles": "the new train.py parses as Python (without it the other rules cannot look)",
    "no-patching": "nothing of prepare, the clock, torch, builtins or sys is reassigned, wrapped, shadowed or deleted",
    "no-val-data": "validation data is reached only through the one evaluate_bpb call",
    "no-metric-forgery": "no environment access, budget constants untouched, val_bpb printed only from evaluate_bpb",
    "no-escape": "no processes, sockets, downloads, loaded state or file writes (torch.save to a bare *.pt name excepted)",
    "allowed-imports": "imports only from the allowed standard-library subset, torch, numpy and prepare's public API",
    "seed-or-order-only": "seeds come from prepare.SEED, and the edit changes more than the seed or the data order",
    "no-indirection": "no exec/eval/compile/__import__/importlib, computed getattr/setattr, globals()/vars(), __dict__",
}
ALL_RULES = frozenset(RULES)

# --- what train.py may use -------------------------------------------------------------------------------------
ALLOWED_MODULES = frozenset({
    "__future__", "math", "time", "os", "sys", "gc", "dataclasses", "functools", "itertools", "typing",
    "collections", "contextlib", "random", "copy", "warnings", "enum", "abc", "resource", "statistics",
    "torch", "numpy", "prepare",
})
# Modules whose only use in train.py would be to leave the process; importing one is `no-escape`, not just a new import.
ESCAPE_MODULES = frozenset({
    "subprocess", "socket", "ssl", "urllib", "urllib3", "http", "requests", "httpx", "aiohttp", "ftplib", "smtplib",
    "telnetlib", "xmlrpc", "webbrowser", "multiprocessing", "concurrent", "asyncio", "pty", "ctypes", "cffi",
    "shutil", "tempfile", "signal", "pathlib", "io", "mmap", "sqlite3", "pickle", "shelve", "huggingface_hub",
})
ESCAPE_TORCH = ("torch.multiprocessing", "torch.distributed", "torch.hub", "torch.utils.model_zoo",
                "torch.utils.cpp_extension")
INDIRECTION_MODULES = frozenset({"importlib", "builtins", "inspect", "types", "marshal", "runpy", "code", "codeop"})

PREPARE_PUBLIC = frozenset({
    "MAX_SEQ_LEN", "TIME_BUDGET", "EVAL_TOKENS", "VOCAB_SIZE", "SEED", "CUDA", "BOS_TOKEN",
    "Tokenizer", "make_dataloader", "evaluate_bpb", "get_token_bytes",
})
BUDGET_CONSTANTS = frozenset({"TIME_BUDGET", "MAX_SEQ_LEN", "EVAL_TOKENS"})
_PREPARE_VAL_NAME = re.compile(r"val|dataset|cache|shard|texts|documents|split|parquet", re.I)
_PREPARE_RESULT_NAME = re.compile(r"env|result|record|write|sha256", re.I)

OS_ALLOWED = frozenset({"cpu_count", "path", "environ", "sched_getaffinity", "getpid", "sep", "linesep"})
OS_ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
ENV_KEYS_WRITABLE = frozenset({"PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                               "TOKENIZERS_PARALLELISM", "CUDA_DEVICE_MAX_CONNECTIONS"})
SYS_ALLOWED = frozenset({"exit", "stdout", "stderr", "argv", "executable", "version", "version_info", "platform", "maxsize",
                         "float_info", "byteorder", "getrecursionlimit", "setrecursionlimit"})
GC_ALLOWED = frozenset({"collect", "disable", "enable", "isenabled", "freeze", "unfreeze", "set_threshold",
                        "get_threshold", "get_count"})
# torch's own configuration namespaces: setting a flag there is tuning, not monkeypatching.
TORCH_CONFIG_PREFIXES = ("torch.backends.", "torch._dynamo.config.", "torch._inductor.config.",
                         "torch._functorch.config.")

INDIRECT_CALLS = frozenset({"exec", "eval", "compile", "__import__", "globals", "locals", "vars", "breakpoint"})
COMPUTED_NAME_CALLS = frozenset({"getattr", "setattr", "delattr", "hasattr"})
INDIRECT_ATTRS = frozenset({"__dict__", "__globals__", "__builtins__", "__code__", "__closure__", "__subclasses__",
                            "__mro__", "__bases__", "__getattribute__", "__setattr__", "__delattr__", "f_globals",
                            "f_locals", "f_back", "f_builtins"})
# What evaluate_bpb reads from the tokenizer it is given: changing these on any object is patching the metric.
TOKENIZER_ATTRS = frozenset({"token_bytes", "bos_token_id", "get_vocab_size", "get_bos_token_id", "encode_batch"})
# Rebinding these in train.py hides what it does (a forged print, a silent open); other builtin names stay free.
GUARDED_BUILTINS = frozenset({"print", "open", "exec", "eval", "compile", "__import__", "getattr", "setattr",
                              "delattr", "globals", "locals", "vars", "float", "round", "exit", "quit"})
MUTATING_METHODS = frozenset({"append", "extend", "insert", "pop", "remove", "clear", "sort", "reverse", "update",
                              "setdefault", "popitem", "__setitem__", "__delitem__", "add", "discard", "fill_",
                              "copy_", "zero_", "add_", "mul_"})
FILE_WRITERS = frozenset({"write_text", "write_bytes", "touch", "unlink", "rmdir", "mkdir", "symlink_to",
                          "hardlink_to", "chmod", "tofile", "savetxt"})
FILE_READERS = frozenset({"read_text", "read_bytes", "fromfile", "memmap", "loadtxt", "genfromtxt", "read_table",
                          "read_parquet"})
WRITE_CALLS = frozenset({"numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt", "torch.jit.save",
                         "torch.onnx.export", "torch.export.save"})
READ_CALLS = frozenset({"numpy.fromfile", "numpy.memmap", "numpy.loadtxt", "numpy.genfromtxt", "torch.from_file"})
# Loading saved state would carry training from an earlier run into this one: a way around the time budget.
LOAD_CALLS = frozenset({"torch.load", "numpy.load", "torch.jit.load", "torch.export.load"})
CHECKPOINT_SUFFIXES = (".pt", ".pth")

SEED_FUNCS = frozenset({"torch.manual_seed", "torch.cuda.manual_seed", "torch.cuda.manual_seed_all",
                        "torch.random.manual_seed", "torch.mps.manual_seed", "random.seed", "random.Random",
                        "numpy.random.seed", "numpy.random.default_rng", "numpy.random.RandomState"})
ORDER_KEYWORDS = frozenset({"seed", "shuffle", "generator"})
MAKE_DATALOADER_SEED_POS = 4  # make_dataloader(tokenizer, batch_size, seq_len, split, seed, device)
MAKE_DATALOADER_SPLIT_POS = 3

METRIC_KEYS = ("val_bpb", "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M",
               "num_steps", "num_params_M", "depth")
_MENTIONS_BPB = re.compile(r"val_?bpb", re.I)
_LITERAL_METRIC = re.compile(r"(^|\n)\s*(" + "|".join(METRIC_KEYS) + r")\s*[:=]\s*[-+]?\.?\d", re.I)
_ENDS_WITH_METRIC_KEY = re.compile(r"(" + "|".join(METRIC_KEYS) + r")\s*[:=]\s*$", re.I)
_VAL_LITERAL = re.compile(r"^\s*(val|valid|validation)\s*$", re.I)
_VAL_PATH = re.compile(r"^\S*(^|[/\\_.-])val(id|idation)?([/\\_.-]|$)\S*$", re.I)  # a path or file name
_DATA_PATH = re.compile(r"\.cache/autoresearch|shard_\d+|\.parquet\b|manifest\.json|tokenizer\.json", re.I)

_SCOPES = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.Module)
_LOOPS = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
_EVALUATE = "prepare.evaluate_bpb"


@dataclass(frozen=True)
class Violation:
    """One broken rule: the rule's name, where (line 0: the edit as a whole) and why."""

    rule: str
    line_no: int
    line: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line_no}" if self.line_no else "edit"
        shown = f": {self.line}" if self.line else ""
        return f"[{self.rule}] {where}{shown}\n    {self.message}"


@dataclass
class GuardReport:
    violations: list[Violation] = field(default_factory=list)
    rules: frozenset[str] = ALL_RULES

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def rules_violated(self) -> set[str]:
        return {v.rule for v in self.violations}

    def text(self) -> str:
        """The report as the reviewer role and the coder read it."""
        if self.ok:
            return f"Guard: pass. All {len(self.rules)} enabled rules hold ({', '.join(sorted(self.rules))})."
        lines = [f"Guard: VETO. {len(self.violations)} violation(s) of {len(self.rules_violated)} rule(s):"]
        lines += [str(v) for v in self.violations]
        lines.append("Rules: " + "; ".join(f"{r}: {RULES[r]}" for r in sorted(self.rules_violated)))
        return "\n".join(lines)


def resolve_rules(rules: Iterable[str] | None) -> frozenset[str]:
    """The enabled rule names; crew.yaml may spell them with underscores (`no_patching`)."""
    if rules is None:
        return ALL_RULES
    chosen = set()
    for name in rules:
        canonical = name.strip().replace("_", "-")
        if canonical not in RULES:
            raise ValueError(f"unknown guard rule {name!r}; the rules are: {', '.join(RULES)}")
        chosen.add(canonical)
    return frozenset(chosen)


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check_prepare_hash(repo_dir: str | Path, expected: str) -> Violation | None:
    """A `prepare-hash` violation when repo_dir/prepare.py is missing or differs from `expected`; else None."""
    path = Path(repo_dir) / LOCKED_FILE
    if not path.is_file():
        return Violation("prepare-hash", 0, LOCKED_FILE, f"{path} is missing; the locked file must stay in place")
    actual = file_sha256(path)
    if actual != expected:
        return Violation("prepare-hash", 0, LOCKED_FILE,
                         f"{path} has sha256 {actual[:12]}..., expected {expected[:12]}...: the locked file changed")
    return None


def check_edit(old_text: str, new_text: str, changed_paths: list[str], *,
               rules: Iterable[str] | None = None) -> GuardReport:
    """Check an edit that turns `old_text` (train.py) into `new_text` and touches `changed_paths`."""
    enabled = resolve_rules(rules)
    fallbacks: dict[Violation, str] = {}
    found = [Violation("only-train-py", 0, p, f"the edit touches {p}; agents may edit only {EDITABLE_FILE}")
             for p in changed_paths if PurePosixPath(p.strip().replace("\\", "/")) != PurePosixPath(EDITABLE_FILE)]
    try:
        tree = ast.parse(new_text)
    except SyntaxError as exc:
        found.append(Violation("compiles", exc.lineno or 0, (exc.text or "").strip(),
                               f"the new {EDITABLE_FILE} does not parse ({exc.msg}); no other rule could be checked"))
    else:
        new = _TrainPy(new_text, tree)
        found += new.violations()
        fallbacks = new.fallbacks
        try:
            old_tree = ast.parse(old_text)
        except SyntaxError:
            old_tree = None  # nothing to compare with: the rules above still looked at the new file
        if old_tree is not None:
            found += _seed_or_order_only(old_text, new_text)
            found += _budget_gate_changes(_TrainPy(old_text, old_tree), new)
    kept: dict[tuple, Violation] = {}
    for v in found:
        rule = v.rule if v.rule in enabled else fallbacks.get(v)
        if rule in enabled:
            v = Violation(rule, v.line_no, v.line, v.message)
            kept.setdefault((v.rule, v.line_no, v.message), v)
    return GuardReport(sorted(kept.values(), key=lambda v: (v.line_no, v.rule)), enabled)


class _TrainPy:
    """One pass over the new train.py; `violations()` runs every AST rule."""

    def __init__(self, text: str, tree: ast.Module):
        self.lines = text.splitlines()
        self.tree = tree
        self.nodes = list(ast.walk(tree))  # walked once; every rule below iterates this list
        self.parents = {child: node for node in self.nodes for child in ast.iter_child_nodes(node)}
        self.found: list[Violation] = []
        # A forbidden import is reported under its specific rule; with that rule off it is still a new import.
        self.fallbacks: dict[Violation, str] = {}
        self.globals: dict[ast.AST, set[str]] = {}  # names a function declares `global`
        for node in self.nodes:
            if isinstance(node, ast.Global):
                self.globals.setdefault(self.scope_of(node), set()).update(node.names)
        self.bindings = [(name, node, self._binding_scope(node, name)) for name, node in _bindings(self.nodes)]
        self.scope_names: dict[ast.AST, set[str]] = {}
        for name, _, scope in self.bindings:
            self.scope_names.setdefault(scope, set()).add(name)
        # (scope, name) -> the dotted name it stands for: imports first, then simple aliases of them
        self.aliases: dict[tuple[ast.AST, str], str] = {}
        for name, node, scope in self.bindings:
            if (source := _import_source(node, name)) is not None:
                self.aliases[(scope, name)] = source
        self.imported = set(self.aliases)
        self._follow_aliases()
        self.prepare_from = {name for name, node, _ in self.bindings
                             if isinstance(node, ast.ImportFrom) and node.module == "prepare"}
        self.prepare_modules = {(scope, name) for name, node, scope in self.bindings
                                if isinstance(node, ast.Import) and _import_source(node, name) == "prepare"}
        self.bpb_names = {(scope, name) for name, node, scope in self.bindings
                          if isinstance(node, ast.Name) and self._assigned_from_evaluate(node)}

    # ---------------------------------------------------------------- scopes and name resolution
    def scope_of(self, node: ast.AST) -> ast.AST | None:
        """The innermost function, lambda, class, comprehension or module strictly around node."""
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, _SCOPES):
            parent = self.parents.get(parent)
        return parent

    def _binding_scope(self, node: ast.AST, name: str) -> ast.AST:
        scope = self.scope_of(node)
        return self.tree if scope is None or name in self.globals.get(scope, ()) else scope

    def _defining_scope(self, node: ast.Name) -> ast.AST | None:
        """The scope whose binding of node.id this use refers to (class bodies are not seen from methods)."""
        scope, innermost = self.scope_of(node), True
        while scope is not None:
            if (innermost or not isinstance(scope, ast.ClassDef)) and node.id in self.scope_names.get(scope, ()):
                return scope
            scope, innermost = self.scope_of(scope), False
        return None

    def _follow_aliases(self) -> None:
        """`x = <module thing>` and `x = <prepare call>()` make x stand for that thing (two passes: chains)."""
        for _ in range(2):
            for name, node, scope in self.bindings:
                assign = self.parents.get(node)
                if not (isinstance(assign, ast.Assign | ast.AnnAssign) and assign.value is not None) or \
                        (scope, name) in self.imported or not isinstance(node, ast.Name):
                    continue
                qual = self.resolve(assign.value)
                if qual is None or qual.startswith("builtins."):
                    continue
                if isinstance(assign.value, ast.Call) and not qual.startswith("prepare."):
                    continue  # results of torch calls are ordinary objects; prepare's are the evaluator's
                self.aliases[(scope, name)] = qual

    def resolve(self, node: ast.AST) -> str | None:
        """The dotted name an expression stands for ('prepare.evaluate_bpb', 'time.time'), if it is one."""
        if isinstance(node, ast.Name):
            scope = self._defining_scope(node)
            if scope is None:
                return f"builtins.{node.id}" if hasattr(builtins, node.id) else None
            return self.aliases.get((scope, node.id))
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            return f"{base}[]" if base else None
        if isinstance(node, ast.Call):
            func = self.resolve(node.func)
            if func == "builtins.getattr" and len(node.args) >= 2 and _literal_str(node.args[1]) is not None:
                base = self.resolve(node.args[0])
                return f"{base}.{_literal_str(node.args[1])}" if base else None
            return f"{func}()" if func else None
        return None

    def _is_evaluate_result(self, value: ast.AST) -> bool:
        if isinstance(value, ast.Call) and self.resolve(value.func) == "builtins.float" and len(value.args) == 1:
            value = value.args[0]
        return isinstance(value, ast.Call) and self.resolve(value.func) == _EVALUATE

    # ---------------------------------------------------------------- reporting
    def violation(self, rule: str, node: ast.AST | None, message: str) -> Violation:
        line_no = getattr(node, "lineno", 0) if node is not None else 0
        line = self.lines[line_no - 1].strip() if 0 < line_no <= len(self.lines) else ""
        return Violation(rule, line_no, line, message)

    def hit(self, rule: str, node: ast.AST | None, message: str, fallback: str | None = None) -> None:
        found = self.violation(rule, node, message)
        self.found.append(found)
        if fallback is not None:
            self.fallbacks[found] = fallback

    def violations(self) -> list[Violation]:
        for node in self.nodes:
            handler = getattr(self, f"_on_{type(node).__name__}", None)
            if handler is not None:
                handler(node)
        self._check_bindings()
        self._check_evaluate_calls()
        self._check_budget_stop()
        self._check_budget_clock()
        self._check_training_inside_budget_loop()
        return self.found

    # ---------------------------------------------------------------- imports
    def _on_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self._check_module(node, a.name)

    def _on_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            self.hit("allowed-imports", node, "relative imports are not allowed: train.py is a single file")
            return
        module = node.module or ""
        if any(a.name == "*" for a in node.names):
            self.hit("no-indirection", node, f"`from {module} import *` hides which names train.py uses")
        if module == "prepare":
            for a in node.names:
                if a.name != "*":
                    self._check_prepare_name(node, a.name)
            return
        self._check_module(node, module)
        for a in node.names:
            self._check_module_attr(node, module, a.name)

    def _check_module(self, node: ast.AST, module: str) -> None:
        root = module.split(".")[0]
        if root in ESCAPE_MODULES or module.startswith(ESCAPE_TORCH):
            self.hit("no-escape", node, f"imports {module}: train.py may not start processes, use the network or files",
                     fallback="allowed-imports")
        elif root in INDIRECTION_MODULES:
            self.hit("no-indirection", node, f"imports {module}, which only serves to reach code indirectly",
                     fallback="allowed-imports")
        elif root not in ALLOWED_MODULES:
            self.hit("allowed-imports", node,
                     f"imports {module}, which is not allowed (allowed: {', '.join(sorted(ALLOWED_MODULES))})")

    def _check_prepare_name(self, node: ast.AST, name: str) -> None:
        if name in PREPARE_PUBLIC:
            return
        if _PREPARE_VAL_NAME.search(name):
            self.hit("no-val-data", node, f"uses prepare.{name}: validation data is reached only through evaluate_bpb")
        elif _PREPARE_RESULT_NAME.search(name):
            self.hit("no-metric-forgery", node, f"uses prepare.{name}, part of how the harness's result is produced")
        else:
            self.hit("allowed-imports", node,
                     f"uses prepare.{name}, not prepare's public API ({', '.join(sorted(PREPARE_PUBLIC))})")

    def _check_module_attr(self, node: ast.AST, module: str, attr: str) -> None:
        """Policy for `module.attr` on the few modules train.py may only use in part."""
        if module == "os" and attr not in OS_ALLOWED:
            if attr in OS_ENVIRONMENT:
                self.hit("no-metric-forgery", node, f"os.{attr}: the environment is the harness's channel to prepare")
            else:
                self.hit("no-escape", node, f"os.{attr}: train.py may use os only for {', '.join(sorted(OS_ALLOWED))}")
        elif module == "sys" and attr not in SYS_ALLOWED:
            self.hit("no-patching", node, f"sys.{attr} reaches into the interpreter that runs prepare's evaluator")
        elif module == "gc" and attr not in GC_ALLOWED:
            self.hit("no-indirection", node, f"gc.{attr} reaches other objects indirectly; only collection is allowed")
        elif module == "prepare":
            self._check_prepare_name(node, attr)
        elif f"{module}.{attr}".startswith(ESCAPE_TORCH):
            self.hit("no-escape", node, f"{module}.{attr}: no processes, distributed workers or downloads")

    # ---------------------------------------------------------------- names and attributes
    def _on_Name(self, node: ast.Name) -> None:
        if node.id == "__builtins__":
            self.hit("no-indirection", node, "__builtins__ gives indirect access to every builtin")
        qual = self.resolve(node)
        if qual == "os.environ" or qual in {f"os.{e}" for e in OS_ENVIRONMENT}:
            self._check_environment_use(node, qual)
        if qual == _EVALUATE and isinstance(node.ctx, ast.Load):
            self._check_evaluate_reference(node)

    def _on_Attribute(self, node: ast.Attribute) -> None:
        if node.attr in INDIRECT_ATTRS:
            self.hit("no-indirection", node, f"{node.attr} reaches names indirectly, around the other rules")
        base = self.resolve(node.value)
        if base is None:
            return
        if base == "os" and node.attr in OS_ENVIRONMENT:
            self._check_environment_use(node, f"os.{node.attr}")
        elif base in ("os", "sys", "gc", "prepare") or f"{base}.{node.attr}" in ESCAPE_TORCH:
            self._check_module_attr(node, base, node.attr)
        if f"{base}.{node.attr}" == _EVALUATE and isinstance(node.ctx, ast.Load):
            self._check_evaluate_reference(node)

    def _check_environment_use(self, node: ast.AST, qual: str) -> None:
        """Only `os.environ["KNOB"] = "value"` / `os.environ.setdefault("KNOB", "value")` for torch/CUDA knobs."""
        parent = self.parents.get(node)
        key = value = None
        if qual == "os.environ" and isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Store):
            assign = self.parents.get(parent)
            key = _literal_str(parent.slice)
            value = _literal_str(assign.value) if isinstance(assign, ast.Assign) else None
        elif qual == "os.environ" and isinstance(parent, ast.Attribute) and parent.attr == "setdefault":
            call = self.parents.get(parent)
            if isinstance(call, ast.Call) and len(call.args) == 2:
                key, value = _literal_str(call.args[0]), _literal_str(call.args[1])
        if key in ENV_KEYS_WRITABLE and value is not None:
            return
        self.hit("no-metric-forgery", node,
                 f"{qual}: train.py may not read or change the environment (the harness's channel for the time "
                 f"budget, seed and result path); only literal writes of {', '.join(sorted(ENV_KEYS_WRITABLE))}")

    def _check_evaluate_reference(self, node: ast.AST) -> None:
        parent = self.parents.get(node)
        if not (isinstance(parent, ast.Call) and parent.func is node):
            self.hit("no-val-data", node, "evaluate_bpb is passed around instead of called once: only the final "
                                          "evaluation may see validation data")

    def _on_Constant(self, node: ast.Constant) -> None:
        if not isinstance(node.value, str) or self._is_docstring(node) or isinstance(self.parents.get(node),
                                                                                       ast.JoinedStr):
            return
        text = node.value
        if "AUTORESEARCH_" in text:
            self.hit("no-metric-forgery", node, "names a harness variable (AUTORESEARCH_*); only prepare.py reads them")
        if _VAL_LITERAL.match(text) or (_VAL_PATH.search(text) and ("/" in text or "." in text)):
            self.hit("no-val-data", node, f"the string {text!r} names validation data")
        elif _DATA_PATH.search(text):
            self.hit("no-val-data", node, f"the string {text!r} names the data cache; data comes from make_dataloader")
        if _LITERAL_METRIC.search(text):
            self.hit("no-metric-forgery", node, f"prints a literal metric {text.strip()!r}: summary values are computed")

    def _is_docstring(self, node: ast.Constant) -> bool:
        return isinstance(self.parents.get(node), ast.Expr)

    def _on_ClassDef(self, node: ast.ClassDef) -> None:
        for base in node.bases:
            qual = self.resolve(base) or ""
            if qual.startswith("prepare."):
                self.hit("no-patching", node, f"subclasses {qual}: the evaluator must get prepare's own objects")

    # ---------------------------------------------------------------- assignments
    def _on_Assign(self, node: ast.Assign) -> None:
        for t in node.targets:
            self._check_store(t, "reassigns")

    def _on_AugAssign(self, node: ast.AugAssign) -> None:
        self._check_store(node.target, "modifies")

    def _on_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._check_store(node.target, "reassigns")

    def _on_Delete(self, node: ast.Delete) -> None:
        for t in node.targets:
            self._check_store(t, "deletes")

    def _check_store(self, target: ast.AST, verb: str) -> None:
        if isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._check_store(element, verb)
            return
        if isinstance(target, ast.Starred):
            self._check_store(target.value, verb)
            return
        if not isinstance(target, ast.Attribute | ast.Subscript):
            return  # plain names: _check_bindings
        attribute = target.value if isinstance(target, ast.Subscript) else target
        if isinstance(attribute, ast.Attribute) and attribute.attr in TOKENIZER_ATTRS:
            self.hit("no-patching", target, f"{verb} .{attribute.attr}, which prepare's evaluator reads from the "
                                            "tokenizer")
            return
        qual = self.resolve(target)
        if qual is None or qual.startswith("os.environ") or qual.startswith("builtins.") and "()" in qual:
            return  # os.environ: _check_environment_use; globals()[...]: no-indirection
        if qual.startswith(TORCH_CONFIG_PREFIXES):
            return
        self.hit("no-patching", target, f"{verb} {qual.replace('[]', '[...]')}: train.py may not change what "
                                        "prepare's evaluator, the clock or the libraries it relies on do")

    def _check_bindings(self) -> None:
        """Names bound anywhere (assignment, def, argument, loop, import...) that must not be rebound."""
        for name, node, scope in self.bindings:
            source = _import_source(node, name)
            if source is not None and source.split(".")[0] == "prepare":
                if name in BUDGET_CONSTANTS and source != f"prepare.{name}":
                    self.hit("no-metric-forgery", node, f"binds {name} to {source}: it must stay prepare's value")
                continue  # the import that brought a prepare name in
            if name in BUDGET_CONSTANTS:
                self.hit("no-metric-forgery", node, f"binds {name} in train.py: it must stay prepare's value")
            elif name in self.prepare_from or (scope, name) in self.prepare_modules:
                self.hit("no-patching", node, f"rebinds {name}, which train.py imported from prepare")
            elif (scope, name) in self.bpb_names and not (isinstance(node, ast.Name) and
                                                          self._assigned_from_evaluate(node)):
                self.hit("no-metric-forgery", node, f"changes {name} after evaluate_bpb produced it")
            elif name in GUARDED_BUILTINS:
                self.hit("no-patching", node, f"rebinds the builtin {name}")

    def _assigned_from_evaluate(self, name: ast.Name) -> bool:
        parent = self.parents.get(name)
        return isinstance(parent, ast.Assign | ast.AnnAssign) and parent.value is not None and \
            self._is_evaluate_result(parent.value)

    # ---------------------------------------------------------------- calls
    def _on_Call(self, node: ast.Call) -> None:
        qual = self.resolve(node.func) or ""
        name = qual.removeprefix("builtins.") if qual.startswith("builtins.") else None
        if name in INDIRECT_CALLS:
            self.hit("no-indirection", node, f"{name}() runs or reaches code indirectly")
        if name in COMPUTED_NAME_CALLS:
            self._check_attr_call(node, name)
        if name == "open":
            self._check_open(node)
        if name == "print":
            self._check_print_file(node)
        if qual == "torch.save":
            self._check_torch_save(node)
        elif qual in WRITE_CALLS:
            self.hit("no-escape", node, f"{qual} writes a file; only torch.save to a bare *.pt file name is allowed")
        elif qual in READ_CALLS:
            self.hit("no-val-data", node, f"{qual} reads files directly; data comes from make_dataloader")
        elif qual in LOAD_CALLS:
            self.hit("no-escape", node, f"{qual} loads saved state: training carried over from another run escapes "
                                        "the time budget")
        if isinstance(node.func, ast.Attribute):
            self._check_method_call(node, node.func)
        method = node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if qual in SEED_FUNCS or method in ("manual_seed", "manual_seed_all"):
            self._check_seed_args(node, qual, node.args + [k.value for k in node.keywords])
        if qual == "prepare.make_dataloader":
            self._check_dataloader(node)
        if qual == "prepare.Tokenizer.from_directory" and (node.args or node.keywords):
            self.hit("no-patching", node, "loads a tokenizer from another directory: the evaluator must score with "
                                          "the active dataset's tokenizer")
        if qual == _EVALUATE:
            self._check_evaluate_args(node)
        self._check_metric_call(node)

    def _check_attr_call(self, node: ast.Call, name: str) -> None:
        if len(node.args) >= 2 and _literal_str(node.args[1]) is None:
            self.hit("no-indirection", node, f"{name}() with a computed attribute name")
        if name in ("setattr", "delattr") and node.args:
            target = self.resolve(node.args[0])
            if target is not None and not target.startswith(TORCH_CONFIG_PREFIXES):
                self.hit("no-patching", node, f"{name}() on {target}: train.py may not change prepare or the "
                                              "libraries the evaluator relies on")

    def _check_open(self, node: ast.Call) -> None:
        mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
        text = "r" if mode is None else _literal_str(mode)
        if text is None or set(text) & set("wax+"):
            self.hit("no-escape", node, "open() for writing: train.py writes no files (torch.save to a bare *.pt "
                                        "file name excepted)")
        else:
            self.hit("no-val-data", node, "open() reads files directly; data comes from make_dataloader")

    def _check_print_file(self, node: ast.Call) -> None:
        for k in node.keywords:
            if k.arg == "file" and self.resolve(k.value) not in ("sys.stdout", "sys.stderr"):
                self.hit("no-escape", node, "print(file=...) writes somewhere other than stdout/stderr")

    def _check_torch_save(self, node: ast.Call) -> None:
        path = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "f"), None)
        text = _literal_str(path) if path is not None else None
        if text is None or PurePosixPath(text).name != text.replace("\\", "/") or \
                not text.endswith(CHECKPOINT_SUFFIXES):
            self.hit("no-escape", node, "torch.save may only write a bare file name ending in .pt or .pth (the "
                                        "working directory, no other folder, no other kind of file)")

    def _check_method_call(self, node: ast.Call, func: ast.Attribute) -> None:
        base = self.resolve(func.value)
        if func.attr in FILE_WRITERS:
            self.hit("no-escape", node, f".{func.attr}() changes the file system")
        elif func.attr in FILE_READERS:
            self.hit("no-val-data", node, f".{func.attr}() reads files directly; data comes from make_dataloader")
        elif func.attr in MUTATING_METHODS and isinstance(func.value, ast.Attribute) and \
                func.value.attr in TOKENIZER_ATTRS:
            self.hit("no-patching", node, f".{func.value.attr}.{func.attr}() changes what prepare's evaluator reads")
        elif base is not None and base.startswith("prepare.") and func.attr in MUTATING_METHODS:
            self.hit("no-patching", node, f"{base}.{func.attr}() changes an object of prepare's in place")

    def _check_seed_args(self, node: ast.Call, qual: str, values: list[ast.AST]) -> None:
        if values and not any(self._mentions_seed(v) for v in values):
            self.hit("seed-or-order-only", node, f"{qual}() is not seeded from prepare.SEED: the harness varies SEED "
                                                 "between re-runs to measure noise")

    def _mentions_seed(self, node: ast.AST) -> bool:
        return any(self.resolve(n) == "prepare.SEED" for n in ast.walk(node) if isinstance(n, ast.Name | ast.Attribute))

    def _check_dataloader(self, node: ast.Call) -> None:
        split = node.args[MAKE_DATALOADER_SPLIT_POS] if len(node.args) > MAKE_DATALOADER_SPLIT_POS else next(
            (k.value for k in node.keywords if k.arg == "split"), None)
        if _literal_str(split) != "train":
            self.hit("no-val-data", node, "make_dataloader must be called with the literal split 'train'; validation "
                                          "data is read only by evaluate_bpb")
        seeds = [k.value for k in node.keywords if k.arg == "seed"]
        if len(node.args) > MAKE_DATALOADER_SEED_POS:
            seeds.append(node.args[MAKE_DATALOADER_SEED_POS])
        if seeds:
            self._check_seed_args(node, "make_dataloader", seeds)

    def _check_evaluate_args(self, node: ast.Call) -> None:
        tokenizer = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "tokenizer"), None)
        if tokenizer is None or self.resolve(tokenizer) != "prepare.Tokenizer.from_directory()":
            self.hit("no-patching", node, "evaluate_bpb must be given the tokenizer from Tokenizer.from_directory(): "
                                          "its token byte lengths define the metric")

    # ---------------------------------------------------------------- printed metrics
    def _on_JoinedStr(self, node: ast.JoinedStr) -> None:
        if isinstance(self.parents.get(node), ast.FormattedValue):
            return  # a format spec
        constant = "".join(v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str))
        if _LITERAL_METRIC.search(constant):
            self.hit("no-metric-forgery", node, "prints a literal metric value: summary values are computed")
        mentions_bpb = bool(_MENTIONS_BPB.search(constant))
        after_key = False
        for part in node.values:
            if isinstance(part, ast.Constant):
                after_key = bool(_ENDS_WITH_METRIC_KEY.search(str(part.value)))
            elif isinstance(part, ast.FormattedValue):
                if mentions_bpb and not self._is_bpb_name(part.value):
                    self.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by "
                                                        "evaluate_bpb")
                    return
                if after_key and isinstance(part.value, ast.Constant):
                    self.hit("no-metric-forgery", node, "prints a literal metric value: summary values are computed")
                after_key = False

    def _on_BinOp(self, node: ast.BinOp) -> None:
        text = _literal_str(node.left)
        if isinstance(node.op, ast.Mod) and text and _MENTIONS_BPB.search(text):
            values = node.right.elts if isinstance(node.right, ast.Tuple) else [node.right]
            if not all(self._is_bpb_name(v) for v in values):
                self.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by evaluate_bpb")

    def _check_metric_call(self, node: ast.Call) -> None:
        """print("val_bpb:", x) and "val_bpb: {}".format(x): every value shown must be evaluate_bpb's result."""
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "format" and _MENTIONS_BPB.search(
                _literal_str(func.value) or ""):
            values = node.args + [k.value for k in node.keywords]
        elif any(_MENTIONS_BPB.search(_literal_str(a) or "") for a in node.args):
            values = []
            for a in node.args:
                if isinstance(a, ast.JoinedStr):  # its formatted values are shown on the same line
                    values += [v.value for v in a.values if isinstance(v, ast.FormattedValue)]
                elif _literal_str(a) is None:
                    values.append(a)
        else:
            return
        if not all(self._is_bpb_name(v) for v in values):
            self.hit("no-metric-forgery", node, "a val_bpb line may only print the value returned by evaluate_bpb")

    def _is_bpb_name(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name) and (self._defining_scope(node), node.id) in self.bpb_names

    # ---------------------------------------------------------------- whole-file checks
    def _check_evaluate_calls(self) -> None:
        calls = [n for n in self.nodes if isinstance(n, ast.Call) and self.resolve(n.func) == _EVALUATE]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        for extra in calls[1:]:
            self.hit("no-val-data", extra, "evaluate_bpb is called more than once: only the final evaluation may "
                                           "see validation data (choosing by it would train on it)")
        for call in calls:
            if self._enclosing(call, _LOOPS) is not None:
                self.hit("no-val-data", call, "evaluate_bpb is called inside a loop: only the final evaluation may "
                                              "see validation data")

    def _check_budget_stop(self) -> None:
        """Training stops on a comparison with TIME_BUDGET itself, not a scaled or shifted copy of it."""
        bare = False
        for node in self.nodes:
            if not isinstance(node, ast.Compare):
                continue
            for operand in [node.left, *node.comparators]:
                if self._is_budget(operand):
                    bare = True
                elif any(self._is_budget(n) for n in ast.walk(operand)):
                    self.hit("no-metric-forgery", node, "compares against an altered TIME_BUDGET: training time is "
                                                        "measured against prepare's budget as it is")
        if not bare:
            self.hit("no-metric-forgery", None, "no comparison with TIME_BUDGET is left: training must stop when "
                                                "prepare's time budget is spent")

    def _check_training_inside_budget_loop(self) -> None:
        """Gradient steps in the function that holds the budget loop happen inside that loop, not after it."""
        loops = {self._enclosing(c, _LOOPS) for c in self.nodes
                 if isinstance(c, ast.Compare) and any(self._is_budget(o) for o in [c.left, *c.comparators])}
        loops.discard(None)
        functions = {self._enclosing(loop, _FUNCTIONS) for loop in loops}
        for node in self.nodes:
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward" \
                    and self._enclosing(node, _FUNCTIONS) in functions and not any(
                        self._inside_node(node, loop) for loop in loops):
                self.hit("no-metric-forgery", node, "a backward pass outside the loop that TIME_BUDGET stops: "
                                                    "training after the budget is spent")

    def _enclosing(self, node: ast.AST, kinds: tuple) -> ast.AST | None:
        parent = self.parents.get(node)
        while parent is not None and not isinstance(parent, kinds):
            parent = self.parents.get(parent)
        return parent

    def _inside_node(self, node: ast.AST, ancestor: ast.AST) -> bool:
        parent = self.parents.get(node)
        while parent is not None and parent is not ancestor:
            parent = self.parents.get(parent)
        return parent is ancestor

    def budget_clocks(self) -> set[str]:
        """Names compared directly with TIME_BUDGET (`training_time >= TIME_BUDGET`): the training-time clock."""
        clocks = set()
        for node in self.nodes:
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                if any(self._is_budget(o) for o in operands):
                    clocks |= {o.id for o in operands if isinstance(o, ast.Name) and not self._is_budget(o)}
        return clocks

    def _check_budget_clock(self) -> None:
        """The clock only ever grows by measured time: no scaling, no subtracting, no literal seconds."""
        clocks = self.budget_clocks()
        for node in self.nodes:
            if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id in clocks:
                if not isinstance(node.op, ast.Add) or not _measured_time(node.value):
                    self.hit("no-metric-forgery", node, f"{node.target.id} is compared with TIME_BUDGET, so it may "
                                                        "only grow by measured time (no scaling or literal seconds)")
            elif isinstance(node, ast.Assign):
                for target, value in _pairs(node):
                    if isinstance(target, ast.Name) and target.id in clocks and not _measured_time(value):
                        self.hit("no-metric-forgery", node, f"{target.id} is compared with TIME_BUDGET, so it may "
                                                            "only be zero or measured time")

    def _is_budget(self, node: ast.AST) -> bool:
        return isinstance(node, ast.Name | ast.Attribute) and self.resolve(node) == "prepare.TIME_BUDGET"


def _measured_time(value: ast.AST) -> bool:
    """Zero, a name, a clock call or differences of those: `dt`, `time.time() - t0`; never `dt * 0.5` or `5.0`."""
    for n in ast.walk(value):
        if isinstance(n, ast.BinOp) and not isinstance(n.op, ast.Add | ast.Sub):
            return False
        if isinstance(n, ast.Constant) and n.value not in (0, None) and not isinstance(n.value, str):
            return False
    return True


def _pairs(node: ast.Assign) -> Iterator[tuple[ast.AST, ast.AST]]:
    """(target, value) pairs of an assignment, unpacking `a, b = x, y`."""
    for target in node.targets:
        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple) and \
                len(target.elts) == len(node.value.elts):
            yield from zip(target.elts, node.value.elts, strict=True)
        else:
            yield target, node.value


def _literal_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _import_source(node: ast.AST, name: str) -> str | None:
    """What an import statement bound to `name` ('prepare.SEED', 'torch'); None for other statements."""
    if isinstance(node, ast.Import):
        return next((a.name for a in node.names if (a.asname or a.name.split(".")[0]) == name), None)
    if isinstance(node, ast.ImportFrom) and node.module and not node.level:
        return next((f"{node.module}.{a.name}" for a in node.names if (a.asname or a.name) == name), None)
    return None


def _bindings(nodes: Iterable[ast.AST]) -> Iterator[tuple[str, ast.AST]]:
    """Every place a name is bound or deleted: assignments, loop/with targets, defs, arguments, imports, except."""
    for node in nodes:
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store | ast.Del):
            yield node.id, node
        elif isinstance(node, ast.arg):
            yield node.arg, node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield node.name, node
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for a in node.names:
                if a.name != "*":
                    yield (a.asname or a.name.split(".")[0]), node
        elif isinstance(node, ast.ExceptHandler) and node.name:
            yield node.name, node


# ------------------------------------------------------------------------ seed-or-order-only: the change itself


def _seed_or_order_only(old_text: str, new_text: str) -> list[Violation]:
    """An edit whose only effect is the seed or the data order (or nothing at all) measures noise, not an idea."""
    if _code_only(old_text, mask_seeds=True) != _code_only(new_text, mask_seeds=True):
        return []  # the usual case: the code changed beyond seeds
    if _code_only(old_text) == _code_only(new_text):
        what = "changes no code (comments, docstrings or formatting only)"
    else:
        what = "changes only the random seed or the data order"
    line_no = _first_changed_line(old_text, new_text)
    lines = new_text.splitlines()
    line = lines[line_no - 1].strip() if 0 < line_no <= len(lines) else ""
    return [Violation("seed-or-order-only", line_no, line,
                      f"the edit {what}: any change in val_bpb would be noise, not an improvement")]


def _code_only(text: str, mask_seeds: bool = False) -> str:
    """The code's AST as text, without comments and docstrings (and with seeds masked): equal means same code."""
    tree = ast.parse(text)
    for node in ast.walk(tree):  # children are queued before a node is yielded, so editing it in place is safe
        for field_name in ("body", "orelse", "finalbody"):
            statements = getattr(node, field_name, None)
            if isinstance(statements, list):
                setattr(node, field_name, [s for s in statements if not _is_bare_string(s)])
        if mask_seeds:
            _mask_seed_or_order(node)
    return ast.dump(tree)


def _is_bare_string(statement: ast.AST) -> bool:
    return isinstance(statement, ast.Expr) and _literal_str(statement.value) is not None


_SEED_MASK = "<seed-or-order>"
_SEEDING_CALLS = frozenset({"manual_seed", "manual_seed_all", "seed", "default_rng", "RandomState", "Random",
                            "Generator"})


def _mask_seed_or_order(node: ast.AST) -> None:
    """Replace a seed or data-order value by one placeholder, so that only those can differ between two files."""
    if isinstance(node, ast.Call):
        func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if func in _SEEDING_CALLS:
            node.args, node.keywords = [ast.Constant(_SEED_MASK)], []
        if func == "make_dataloader" and len(node.args) > MAKE_DATALOADER_SEED_POS:
            node.args[MAKE_DATALOADER_SEED_POS] = ast.Constant(_SEED_MASK)
        for k in node.keywords:
            if k.arg in ORDER_KEYWORDS:
                k.value = ast.Constant(_SEED_MASK)
    elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and ("SEED" in t.id.upper() or "SHUFFLE" in t.id.upper()) for t in node.targets):
        node.value = ast.Constant(_SEED_MASK)


# ------------------------------------------------------------------------ the budget clock's gates: the change itself


def _budget_gate_changes(old: _TrainPy, new: _TrainPy) -> list[Violation]:
    """`if step >= EXCLUDED_STEPS: training_time += dt` decides which steps count against TIME_BUDGET; an edit
    may drop such a gate (every step counts) but not add or widen one (uncounted steps train for free)."""
    before = _budget_gates(old)
    return [new.violation("no-metric-forgery", node, "changes which training steps count against TIME_BUDGET (the "
                          "test, or a constant in it): steps left uncounted would train past the budget")
            for test, node in _budget_gates(new).items() if test not in before]


def _budget_gates(program: _TrainPy) -> dict[str, ast.AST]:
    """The tests of the `if`s around `clock += ...`, with module constants replaced by their values."""
    constants = {t.id: node.value for node in program.tree.body if isinstance(node, ast.Assign)
                 for t in node.targets if isinstance(t, ast.Name)}
    clocks = program.budget_clocks()
    gates = {}
    for node in program.nodes:
        if isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name) and node.target.id in clocks:
            parent = program.parents.get(node)
            while parent is not None and not isinstance(parent, ast.FunctionDef | ast.Module):
                if isinstance(parent, ast.If):
                    gates[ast.dump(_Substitute(constants).visit(copy.deepcopy(parent.test)))] = parent
                parent = program.parents.get(parent)
    return gates


class _Substitute(ast.NodeTransformer):
    def __init__(self, constants: dict[str, ast.AST]):
        self.constants = constants

    def visit_Name(self, node: ast.Name):
        return copy.deepcopy(self.constants[node.id]) if node.id in self.constants else node


def _first_changed_line(old_text: str, new_text: str) -> int:
    matcher = difflib.SequenceMatcher(a=old_text.splitlines(), b=new_text.splitlines(), autojunk=False)
    for tag, _, _, j1, _ in matcher.get_opcodes():
        if tag != "equal":
            return j1 + 1
    return 0
