"""The reviewer's deterministic rules: refuse an edit of train.py that games the experiment, before any GPU time.

`check_edit` parses the new train.py with `ast` (and compares it with the old one where a rule is about the
change) and returns a `GuardReport`: every violation names its rule, the line and why. The rules are named
(`RULES`) and can be switched off one by one from crew.yaml's `guard:` section; all are on by default.

One module per rule family, each with its policy in its docstring: modules.py (imports, and what train.py may
use of os/sys/gc/prepare), patching.py, files.py, valdata.py, metrics.py, budget.py (the time budget),
seeds.py, dataorder.py (the training stream in prepare's order), indirection.py, causality.py, targets.py (no
target information in the logits); hashes.py holds the prepare.py hash check the loop runs around every run;
policy.py the allow and deny lists; program.py the view every family reads (`Program`, over the one model of
train.py in agents/trainpy.py); flow.py how calls and values move through it (helpers, lambdas, stored functions,
reaching assignments), which the rules follow instead of the shape of one loop; attention_eval.py evaluates
attention weights and masks on a few positions. What static analysis cannot
see is bounded at run time: the sandbox, the runner's hard kill and record checks, and the loop's wall-time
check against the baselines.
"""

from agents.bench.guard.check import FAMILIES, check_edit
from agents.bench.guard.hashes import LOCKED_FILE, check_prepare_hash, file_sha256
from agents.bench.guard.policy import ALLOWED_MODULES, PREPARE_PUBLIC
from agents.bench.guard.report import ALL_RULES, RULES, GuardReport, Violation, resolve_rules
from agents.trainpy import EDITABLE_FILE

__all__ = [
    "ALL_RULES", "ALLOWED_MODULES", "EDITABLE_FILE", "FAMILIES", "GuardReport", "LOCKED_FILE", "PREPARE_PUBLIC",
    "RULES", "Violation", "check_edit", "check_prepare_hash", "file_sha256", "resolve_rules",
]
