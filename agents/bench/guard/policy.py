"""What train.py may use: the allow and deny lists every rule family reads.

Kept in one place so the reviewer, the coder and a human can read the policy without reading the checks.
"""

from __future__ import annotations

import re

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
PREPARE_VAL_NAME = re.compile(r"val|dataset|cache|shard|texts|documents|split|parquet", re.I)
PREPARE_RESULT_NAME = re.compile(r"env|result|record|write|sha256", re.I)

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
MENTIONS_BPB = re.compile(r"val_?bpb", re.I)
LITERAL_METRIC = re.compile(r"(^|\n)\s*(" + "|".join(METRIC_KEYS) + r")\s*[:=]\s*[-+]?\.?\d", re.I)
ENDS_WITH_METRIC_KEY = re.compile(r"(" + "|".join(METRIC_KEYS) + r")\s*[:=]\s*$", re.I)
VAL_LITERAL = re.compile(r"^\s*(val|valid|validation)\s*$", re.I)
VAL_PATH = re.compile(r"^\S*(^|[/\\_.-])val(id|idation)?([/\\_.-]|$)\S*$", re.I)  # a path or file name
DATA_PATH = re.compile(r"\.cache/autoresearch|shard_\d+|\.parquet\b|manifest\.json|tokenizer\.json", re.I)


# Hooks and modes that act on every module or every torch call, the evaluator's included: a global forward hook
# can rewrite logits only while prepare scores them. Per-module hooks on train.py's own model stay allowed.
GLOBAL_HOOK_NAME = re.compile(r"^(register_module_\w*hook|_global_\w*hooks?|_register_\w*global\w*)$")
GLOBAL_HOOK_PREFIXES = ("torch.overrides.", "torch.utils._python_dispatch.", "torch._C._push_on_torch_",
                        "torch._C._set_torch_function", "torch._C._set_dispatch_mode", "torch._C._add_dispatch_mode",
                        "torch._C._DisableTorchDispatch", "torch._C._EnablePythonDispatcher")
# torch.library can replace the kernel of an existing operator everywhere; defining a new custom op is fine.
TORCH_LIBRARY_ALLOWED = frozenset({"torch.library.custom_op", "torch.library.triton_op", "torch.library.wrap_triton"})
