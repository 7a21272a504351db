"""`causal-attention`: every position sees only itself and earlier tokens, as the evaluator's probe demands.

The probe in prepare.evaluate_bpb catches a non-causal model only after the whole budget is spent; these
checks refuse the usual ways of losing causality before any GPU time:
- attention calls: `is_causal`/`causal` must be the literal True (a module constant set to True counts) unless
  an explicit mask is passed; a library attention call with neither is bidirectional; a mask built only from
  ones/zeros/full has nothing causal in it; a window reaching ahead (`window_size=(left, right)`, right != 0)
  needs causal=True; a mask function over (q_idx, kv_idx) must order them (q_idx >= kv_idx);
- attention computed by hand, wherever it is in train.py (a method, a free function, a lambda, a helper object, a
  function stored on the module): the weights of every `weights @ values` made from pairwise scores are
  evaluated on a few positions from the code's own masks (`attention_eval.py`), so a padding mask that hides
  nothing, a triangle that hides the past instead of the future, a window reaching both ways or a
  sigmoid over unmasked scores are refused by what they compute, not by their names; masks handed to attention
  calls and flex-attention mask functions are evaluated the same way. Where the evaluation cannot decide, scores
  softmaxed with nothing mask-like on the way are refused;
- shifts towards later positions inside the model (methods of nn.Module subclasses and every train.py function
  they run or hand on: `flow.model_functions`):
  roll/flip along a sequence axis (wrapping brings later tokens forward), `x[:, 1:]` concatenated or padded back
  to length or mixed into another tensor, pads that drop the first positions (`F.pad(x, (0, 0, -1, 1))`), and
  indices or gathers at `positions + k`.
"""

from __future__ import annotations

import ast
import re

from agents.bench.guard.attention_eval import Evaluator, attention_products, is_transposed
from agents.bench.guard.flow import flow
from agents.bench.guard.program import Program, keyword

RULE = "causal-attention"
_ATTENTION_FUNC = re.compile(r"(attn|attention)", re.I)
_ATTENTION_MODULE = re.compile(r"^(MultiheadAttention|Transformer\w*)$")
_MASK_KEYWORDS = ("attn_mask", "mask", "attention_mask", "src_mask", "tgt_mask", "block_mask", "attn_bias",
                  "score_mod")
_MASKING = re.compile(r"mask|causal|tril|triu|where", re.I)
_CAUSAL_BUILDERS = re.compile(r"^(tril|triu|tril_|triu_|create_block_mask|create_mask|and_masks|causal\w*|"
                              r"LowerTriangular\w*)$")
_SHIFT_CALLS = {"cat", "concat", "concatenate", "stack", "hstack", "vstack", "pad"}
_SEQUENCE_AXES_OK = {0}  # batch


def check(p: Program) -> None:
    constants = _module_constants(p)
    attention_modules = _attention_module_names(p)
    evaluator = Evaluator(p)
    for node in p.of(ast.Call):
        _check_attention_call(p, node, constants, attention_modules, evaluator)
    for node in p.of(ast.FunctionDef, ast.Lambda):
        _check_mask_function(p, node, evaluator)
    for product, weights in attention_products(p):
        if evaluator.weights_leak(weights):
            p.hit(RULE, product, f"the attention weights {_short(weights)} put weight on later positions (computed "
                                 "from the code's own masks): every position attends to tokens after it")
    checked: set[int] = set()
    for func in p.of(ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda):
        _check_scores_softmax(p, func, evaluator, checked)
    for func in flow(p).model_functions():
        _check_shifts(p, func)


def _short(node: ast.AST, limit: int = 60) -> str:
    text = ast.unparse(node)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------- attention calls


def _check_attention_call(p: Program, node: ast.Call, constants: dict, attention_modules: set[str],
                          evaluator: Evaluator) -> None:
    qual = p.resolve(node.func) or ""
    last = qual.rsplit(".", 1)[-1].removesuffix("()")
    library_attention = qual.startswith("torch.") and bool(_ATTENTION_FUNC.search(last)) and last[:1].islower()
    module_attention = _called_name(node.func) in attention_modules
    causal_kw = next((k for k in node.keywords if k.arg in ("is_causal", "causal")), None)
    if last == "scaled_dot_product_attention" and causal_kw is None and len(node.args) > 5:
        causal_value = node.args[5]
    else:
        causal_value = causal_kw.value if causal_kw is not None else None
    mask = next((k.value for k in node.keywords if k.arg in _MASK_KEYWORDS), None)
    if mask is None and last == "scaled_dot_product_attention":
        mask = keyword(node, "attn_mask", 3)
    if mask is not None and isinstance(mask, ast.Constant) and mask.value is None:
        mask = None
    causal = _literal_bool(causal_value, constants) if causal_value is not None else None
    if causal_value is not None and causal is not True and mask is None:
        shown = ast.unparse(causal_value)
        p.hit(RULE, node, f"{causal_kw.arg if causal_kw else 'is_causal'}={shown} without a mask: every position "
                          "attends to later tokens (use is_causal=True or pass a causal mask)")
    elif causal_value is None and mask is None and (library_attention or module_attention):
        p.hit(RULE, node, f"{last or _called_name(node.func)}() without is_causal=True or a mask is bidirectional: "
                          "every position attends to later tokens")
    # a bool mask's True lets a position attend for the functional calls, hides it for nn.MultiheadAttention and
    # nn.Transformer; a train.py helper's own mask is judged inside it, where its use shows what it means
    true_hides = module_attention or any(k.arg in ("src_mask", "tgt_mask") for k in node.keywords)
    computed = library_attention or module_attention
    problem = _mask_problem(p, mask, evaluator if computed else None, true_hides) \
        if mask is not None and causal is not True else None
    if problem is not None:
        p.hit(RULE, node, f"the attention mask {ast.unparse(mask)} {problem}")
    window = next((k.value for k in node.keywords if k.arg in ("window_size", "window")), None)
    if isinstance(window, ast.Tuple) and len(window.elts) == 2 and causal is not True:
        right = window.elts[1]
        if not (isinstance(right, ast.Constant) and right.value == 0):
            p.hit(RULE, node, f"window {ast.unparse(window)} reaches {ast.unparse(right)} positions ahead without "
                              "causal=True: positions see later tokens")


def _attention_module_names(p: Program) -> set[str]:
    """Names (or self attributes) bound to torch attention modules, whose calls need a mask or is_causal."""
    names = set()
    for node in p.of(ast.Assign):
        if isinstance(node.value, ast.Call):
            qual = p.resolve(node.value.func) or ""
            if qual.startswith("torch.") and _ATTENTION_MODULE.match(qual.rsplit(".", 1)[-1]):
                names |= {_called_name(t) for t in node.targets} - {""}
    return names


def _called_name(func: ast.AST) -> str:
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def _mask_problem(p: Program, mask: ast.AST, evaluator: Evaluator | None, true_hides: bool) -> str | None:
    """Why the mask lets positions see later tokens, or None when it may well be causal: computed from the code
    that builds it where it can be, else read from its shape."""
    computed = evaluator.mask_leak(mask, true_hides=true_hides) if evaluator is not None else None
    if computed is not None:
        return "lets positions attend to later tokens (computed from the code that builds it)" if computed else None
    sources = _definitions(p, mask) or [mask]
    if all(_constant_fill(source) for source in sources):
        return "is built only from ones/zeros/full: nothing in it hides later positions"
    for source in sources:
        for call in (n for n in ast.walk(source) if isinstance(n, ast.Call)):
            name = _called_name(call.func)
            diagonal = _int_value(keyword(call, "diagonal", 1 if isinstance(call.func, ast.Name) or
                                          _is_torch_attr(call.func) else 0))
            if name in ("tril", "tril_") and diagonal is not None and diagonal > 0:
                return f"keeps {diagonal} diagonal(s) above the main one (tril(diagonal={diagonal})): later tokens"
            if name in ("triu", "triu_") and diagonal is not None and diagonal > 1:
                return f"masks only from diagonal {diagonal} (triu(diagonal={diagonal})): the next token stays visible"
        names = {_called_name(c.func) for c in ast.walk(source) if isinstance(c, ast.Call)}
        if "abs" in names and not names & {"tril", "triu", "tril_", "triu_"}:
            return "is symmetric in the distance between positions (abs): a window reaching ahead"
    return None


def _is_torch_attr(func: ast.AST) -> bool:
    return isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch"


def _constant_fill(expr: ast.AST) -> bool:
    calls = [n for n in ast.walk(expr) if isinstance(n, ast.Call)]
    names = {_called_name(c.func) for c in calls}
    if not names or any(_CAUSAL_BUILDERS.match(n) for n in names):
        return False
    if any(isinstance(n, ast.Compare) for n in ast.walk(expr)):
        return False  # arange(T)[:, None] >= arange(T): an ordering
    return names <= {"ones", "zeros", "full", "ones_like", "zeros_like", "full_like", "bool", "to", "float",
                     "expand", "view", "reshape", "unsqueeze", "repeat"}


def _definitions(p: Program, expr: ast.AST) -> list[ast.AST]:
    """What a mask name or `self.<name>` was assigned (register_buffer counts), anywhere in the file."""
    name = expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else None
    if isinstance(expr, ast.Subscript):
        return _definitions(p, expr.value)
    if name is None:
        return []
    found = []
    for node in p.of(ast.Assign):
        if any(_called_name(t) == name for t in node.targets):
            found.append(node.value)
    for node in p.of(ast.Call):
        if _called_name(node.func) == "register_buffer" and len(node.args) >= 2 and \
                isinstance(node.args[0], ast.Constant) and node.args[0].value == name:
            found.append(node.args[1])
    return found


def _check_mask_function(p: Program, func: ast.FunctionDef | ast.Lambda, evaluator: Evaluator) -> None:
    """flex-attention style mask_mod(b, h, q_idx, kv_idx): it must keep kv_idx at or before q_idx."""
    params = [a.arg for a in func.args.args]
    q = next((a for a in params if a.startswith("q_idx") or a == "q_index"), None)
    kv = next((a for a in params if a.startswith(("kv_idx", "k_idx")) or a == "kv_index"), None)
    if q is None or kv is None:
        return
    computed = evaluator.mask_function_leak(func, q, kv)
    if computed is not None:
        if computed:
            p.hit(RULE, func, f"the mask function over ({q}, {kv}) lets a query see later keys (computed from its "
                              "code): positions see later tokens")
        return
    for node in ast.walk(func):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1:
            left, op, right = node.left, node.ops[0], node.comparators[0]
            names = (getattr(left, "id", None), getattr(right, "id", None))
            if (names == (q, kv) and isinstance(op, ast.GtE | ast.Gt)) or \
                    (names == (kv, q) and isinstance(op, ast.LtE | ast.Lt)):
                return
    p.hit(RULE, func, f"the mask function over ({q}, {kv}) never requires {kv} <= {q}: positions see later tokens")


# ---------------------------------------------------------------------------------------- model code


def _check_scores_softmax(p: Program, func: ast.AST, evaluator: Evaluator, checked: set[int]) -> None:
    """Where the evaluation could not decide: softmax over q @ k^T with nothing mask-like on the way."""
    assigned = _local_assignments(func)
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and _called_name(node.func) == "softmax" and id(node) not in checked \
                and id(node) not in evaluator.decided:
            checked.add(id(node))
            source = _operand(p, node)
            if source is None:
                continue
            closure = _closure(source, assigned)
            if any(_is_scores(n) for n in closure) and not any(_masks(n) for n in closure):
                p.hit(RULE, node, "softmax over attention scores (q @ k^T) with no causal mask on the way: every "
                                  "position attends to later tokens")


def _operand(p: Program, call: ast.Call) -> ast.AST | None:
    """The tensor a torch function (`F.softmax(x)`, `torch.roll(x, ...)`) or a method (`x.softmax()`) acts on."""
    if _is_function_form(p, call):
        return call.args[0] if call.args else keyword(call, "input")
    return call.func.value if isinstance(call.func, ast.Attribute) else None


def _is_function_form(p: Program, call: ast.Call) -> bool:
    if isinstance(call.func, ast.Name):
        return True
    base = p.resolve(call.func.value) if isinstance(call.func, ast.Attribute) else None
    return base is not None and base.startswith("torch") and "()" not in base


def _local_assignments(func: ast.AST) -> dict[str, list[ast.AST]]:
    assigned: dict[str, list[ast.AST]] = {}
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                for t in ast.walk(target):
                    if isinstance(t, ast.Name):
                        assigned.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
            assigned.setdefault(node.target.id, []).append(node.value)
    return assigned


def _closure(expr: ast.AST, assigned: dict[str, list[ast.AST]]) -> list[ast.AST]:
    """Every node the expression is computed from, following local assignments."""
    nodes, queue, seen = [], [expr], set()
    while queue:
        current = queue.pop()
        for n in ast.walk(current):
            nodes.append(n)
            if isinstance(n, ast.Name) and n.id not in seen:
                seen.add(n.id)
                queue.extend(assigned.get(n.id, []))
    return nodes


def _is_scores(node: ast.AST) -> bool:
    """q @ k.transpose(-2, -1), torch.matmul(q, k.mT): pairwise position scores."""
    operands = []
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
        operands = [node.right]
    elif isinstance(node, ast.Call) and _called_name(node.func) in ("matmul", "bmm", "baddbmm"):
        operands = node.args[1:]
    return any(is_transposed(o) for o in operands)


def _masks(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and _MASKING.search(_called_name(node.func)):
        return True
    if isinstance(node, ast.Name | ast.Attribute) and _MASKING.search(_called_name(node) or ""):
        return True
    return isinstance(node, ast.keyword) and bool(_MASKING.search(node.arg or ""))


def _check_shifts(p: Program, func: ast.AST) -> None:
    embedded = _embedding_inputs(func)
    for node in ast.walk(func):
        if not isinstance(node, ast.Call):
            if isinstance(node, ast.Subscript) and _index_ahead(node):
                p.hit(RULE, node, f"{ast.unparse(node)} indexes later positions (position + k): each position "
                                  "would read a later token")
            continue
        name = _called_name(node.func)
        if name in ("roll", "flip"):
            _check_roll(p, node, name, embedded)
        elif name in _SHIFT_CALLS:
            _check_shift_call(p, node, name)
        elif name in ("gather", "index_select", "take_along_dim") and \
                any(_ahead(n) for a in node.args[1:] for n in ast.walk(a)):
            p.hit(RULE, node, f"{name}() at positions + k: each position would read a later token")
    for node in ast.walk(func):
        if isinstance(node, ast.BinOp) and not isinstance(node.op, ast.MatMult) and \
                any(_forward_slice(side) for side in (node.left, node.right)):
            p.hit(RULE, node, f"{ast.unparse(node)} mixes a sequence shifted towards later positions into the "
                              "stream: position t would see token t+1")


def _check_roll(p: Program, node: ast.Call, name: str, embedded: set[str]) -> None:
    tensor = _operand(p, node)
    function_form = _is_function_form(p, node)
    if name == "roll":
        dims = keyword(node, "dims", 2 if function_form else 1)
    elif function_form:
        dims = keyword(node, "dims", 1)
    else:  # x.flip(1, 2) takes the axes as separate arguments
        dims = keyword(node, "dims") or (ast.Tuple(elts=list(node.args)) if node.args else None)
    axes = _int_values(dims)
    if axes is None:
        p.hit(RULE, node, f"{name}() over the whole tensor inside the model moves later tokens to earlier positions")
        return
    token_ids = isinstance(tensor, ast.Name) and tensor.id in embedded
    bad = [a for a in axes if a not in _SEQUENCE_AXES_OK and (a != -1 or token_ids)]
    if bad:
        p.hit(RULE, node, f"{name}() along axis {bad[0]} inside the model moves tokens along the sequence: later "
                          "tokens reach earlier positions")


def _check_shift_call(p: Program, node: ast.Call, name: str) -> None:
    if name == "pad":
        spec = keyword(node, "pad", 1)
        if isinstance(spec, ast.Tuple | ast.List):
            values = [_int_value(e) for e in spec.elts]
            for left in values[0::2]:
                if left is not None and left < 0:
                    p.hit(RULE, node, "pad() drops the first positions and pads at the end: position t would see "
                                      "token t+1")
                    return
    pieces = node.args[0].elts if node.args and isinstance(node.args[0], ast.List | ast.Tuple) else node.args[:1]
    if any(_forward_slice(piece) for piece in pieces):
        p.hit(RULE, node, f"{name}() of a sequence shifted towards later positions (x[:, 1:]): position t would "
                          "see token t+1")


def _forward_slice(node: ast.AST) -> bool:
    """x[:, 1:] (or x[:, :, k:]): an open-ended slice starting past 0 on an axis after the batch axis."""
    if not isinstance(node, ast.Subscript) or not isinstance(node.slice, ast.Tuple):
        return False
    for axis, element in enumerate(node.slice.elts):
        if isinstance(element, ast.Constant) and element.value is Ellipsis:
            return False  # ... then the last (feature) axis
        if axis >= 1 and isinstance(element, ast.Slice) and element.upper is None and element.lower is not None:
            start = _int_value(element.lower)
            if start is None or start > 0:
                return True
    return False


def _index_ahead(node: ast.Subscript) -> bool:
    elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else []
    return any(axis >= 1 and not isinstance(e, ast.Slice) and any(_ahead(n) for n in ast.walk(e))
               for axis, e in enumerate(elements))


def _ahead(node: ast.AST) -> bool:
    """positions + k with k > 0 (arange(T) + 1, pos + 1)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        for side, other in ((node.right, node.left), (node.left, node.right)):
            k = _int_value(side)
            if k is not None and k > 0 and not isinstance(other, ast.Constant):
                return True
    return False


def _embedding_inputs(func: ast.AST) -> set[str]:
    """Names passed to an embedding (token ids): their last axis is the sequence."""
    names = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Name) and \
                re.search(r"wte|emb", _called_name(node.func), re.I):
            names.add(node.args[0].id)
    return names


def _module_constants(p: Program) -> dict[str, object]:
    values: dict[str, list] = {}
    for node in p.tree.body:
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    values.setdefault(t.id, []).append(node.value)
    return {k: v[0].value for k, v in values.items() if len(v) == 1 and isinstance(v[0], ast.Constant)}


def _literal_bool(node: ast.AST, constants: dict) -> bool | None:
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, bool) else None
    if isinstance(node, ast.Name) and isinstance(constants.get(node.id), bool):
        return constants[node.id]
    return None


def _int_value(node: ast.AST | None) -> int | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _int_value(node.operand)
        return -inner if inner is not None else None
    return None


def _int_values(node: ast.AST | None) -> list[int] | None:
    if node is None:
        return None
    if isinstance(node, ast.Tuple | ast.List):
        values = [_int_value(e) for e in node.elts]
        return None if any(v is None for v in values) else values
    value = _int_value(node)
    return [value] if value is not None else [1]  # a computed axis: treat as a sequence axis
