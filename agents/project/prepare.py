"""Data, tokenizer, dataloader and the val_bpb evaluator (locked: the harness checks this file's hash).

`python prepare.py` fills the cache once and is idempotent:
  - Parquet shards with one `text` column, the last one pinned for validation and never trained on;
  - a BPE tokenizer trained on the training shards only, wrapped as a `tiktoken.Encoding`;
  - the UTF-8 byte length of every token, which turns cross-entropy into bits per byte.

Sources (--source): `climbmix` downloads shards of karpathy/climbmix-400b-shuffle (resumable, verified),
`builtin` builds a corpus from text every machine has (this Python's standard library sources and its
pydoc topics), `local` reads a folder of .txt/.parquet files, `auto` (default) tries climbmix and falls
back to builtin when the network is unavailable. Each source lives in its own folder of the cache, so
switching sources never throws away a download; `active.json` names the one train.py uses.

train.py imports the constants, `Tokenizer`, `make_dataloader` and `evaluate_bpb`. Only this file reads
the harness's AUTORESEARCH_* variables.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import random
import re
import sys
import sysconfig
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken
import torch
import torch.nn.functional as F
from tqdm import tqdm


def _env_number(name: str, default: str, kind: type):
    raw = os.environ.get(name) or default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


# ---------------------------------------------------------------------------------------------------
# Constants: the device profile is fixed for a machine, so results on one machine stay comparable.
# ---------------------------------------------------------------------------------------------------

CUDA = torch.cuda.is_available()
MAX_SEQ_LEN = 2048 if CUDA else 256
TIME_BUDGET = _env_number("AUTORESEARCH_TIME_BUDGET", "300", float)
# CPU: 32 rows of 256 tokens keep the final evaluation of the tiny CPU model around a second.
EVAL_TOKENS = 40 * 2**19 if CUDA else 2**13
VOCAB_SIZE = 8192
# Validation tokens written once by prepare, so evaluation never re-tokenises: twice the CUDA evaluation, which
# covers the documents cut off at the end of each row too. A split with fewer tokens is stored whole.
VAL_TOKENS_STORED = 2 * 40 * 2**19
SEED = _env_number("AUTORESEARCH_SEED", "42", int)
CACHE_DIR = Path(os.environ.get("AUTORESEARCH_CACHE") or "~/.cache/autoresearch").expanduser()

SOURCES = ("auto", "climbmix", "builtin", "local")
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_INDEX = 6542  # the dataset's last shard, pinned for validation
DEFAULT_NUM_SHARDS = 10
# The whole standard library is ~31 MB: all of it on a GPU, which goes through 16 MB in seconds; on a CPU,
# 16 MB (~5 s to prepare on 2 cores) is far more than a short run reads.
DEFAULT_BUILTIN_MB = 64.0 if CUDA else 16.0
DOC_CHARS = 2000  # builtin/local text files are cut into documents of about this size, at line ends
SHARD_CHARS = 4_000_000  # text per written shard
ROW_GROUP_DOCS = 1024
VAL_ONE_IN = 16  # a file (or Parquet row) is validation when its name hashes to 0 mod 16
TOKENIZER_MAX_CHARS = 1_000_000_000
TOKENIZER_DOC_CAP = 10_000  # very long documents would dominate the pair counts
DOWNLOAD_ATTEMPTS = 5
DOWNLOAD_BACKOFF_S = 1.0  # doubled after every failed attempt
# GPT-4's split pattern with digits grouped by at most two, as in upstream autoresearch.
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS_TOKEN = "<|bos|>"
SPECIAL_TOKENS = (BOS_TOKEN,)


class PrepareError(RuntimeError):
    """Preparing the cache failed; the message says what and what to do."""


class NotPreparedError(FileNotFoundError):
    """The cache has no data or tokenizer yet."""


class CausalityError(RuntimeError):
    """The model's logits at a position depend on later tokens."""


class EvaluationError(RuntimeError):
    """The model cannot be scored (wrong output shape, non-finite logits)."""


def _cache_root() -> Path:
    # Read at call time so a harness or test that sets AUTORESEARCH_CACHE after import is honoured.
    raw = os.environ.get("AUTORESEARCH_CACHE")
    return Path(raw).expanduser() if raw else CACHE_DIR


def _not_prepared(what: str) -> NotPreparedError:
    return NotPreparedError(
        f"{what}. Run `python prepare.py` (or `autoresearch prepare`) first "
        f"(cache: {_cache_root()}; AUTORESEARCH_CACHE selects another)."
    )


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def _is_validation(key: str) -> bool:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % VAL_ONE_IN == 0


# ---------------------------------------------------------------------------------------------------
# Datasets on disk: <cache>/<source>/{shard_*.parquet, manifest.json, tokenizer.json}
# The manifest records every shard's size and sha256, so a truncated or corrupt file is never used.
# ---------------------------------------------------------------------------------------------------


class Dataset:
    def __init__(self, root: Path, source: str):
        self.source = source
        self.dir = root / source
        self.manifest_path = self.dir / "manifest.json"
        self.tokenizer_path = self.dir / "tokenizer.json"
        self.val_tokens_path = self.dir / "val_tokens.npy"  # uint16 ids, each document starting with BOS
        self.val_ends_path = self.dir / "val_doc_ends.npy"  # int64 end offset of each document

    def manifest(self) -> dict | None:
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_manifest(self, manifest: dict) -> None:
        _atomic_write_text(self.manifest_path, json.dumps(manifest, indent=1, sort_keys=True))

    def shard_problem(self, shard: dict, full: bool) -> str | None:
        """Why this shard cannot be used, or None. `full` also checks the sha256, not only the size."""
        path = self.dir / shard["name"]
        if not path.is_file():
            return "missing"
        size = path.stat().st_size
        if size != shard["bytes"]:
            return f"{size} bytes, expected {shard['bytes']}"
        if full and _sha256_file(path) != shard["sha256"]:
            return "sha256 differs from the manifest"
        return None

    def shard_problems(self, full: bool) -> list[str]:
        manifest = self.manifest()
        if manifest is None or not manifest.get("complete"):
            return ["data not prepared"]
        return [f"{s['name']}: {p}" for s in manifest["shards"] if (p := self.shard_problem(s, full))]

    def problems(self, full: bool) -> list[str]:
        """Everything that keeps this dataset from being used; empty when it is ready."""
        issues = self.shard_problems(full)
        if not issues and not self.tokenizer_valid(self.manifest()):
            issues.append("tokenizer missing or trained on other shards")
        if not issues and (problem := self.val_tokens_problem(full)):
            issues.append(f"validation tokens {problem}")
        return issues

    def val_tokens_problem(self, full: bool) -> str | None:
        """Why the stored validation tokens cannot be used (missing, stale, damaged), or None."""
        manifest = self.manifest() or {}
        entry = manifest.get("val_tokens")
        if not entry:
            return "not written yet"
        val = [s for s in manifest["shards"] if s["split"] == "val"]
        if entry.get("from") != {"val": [s["sha256"] for s in val], "tokenizer": _sha256_file(self.tokenizer_path)}:
            return "made from another validation shard or tokenizer"
        for key, path in (("tokens", self.val_tokens_path), ("ends", self.val_ends_path)):
            if not path.is_file() or path.stat().st_size != entry[key]["bytes"]:
                return f"file {path.name} missing or truncated"
            if full and _sha256_file(path) != entry[key]["sha256"]:
                return f"file {path.name} differs from the manifest"
        return None

    def tokenizer_valid(self, manifest: dict) -> bool:
        try:
            meta = json.loads(self.tokenizer_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return False
        hashes = {s["name"]: s["sha256"] for s in manifest["shards"] if s["split"] == "train"}
        trained_on = meta.get("trained_on", {})
        return bool(trained_on) and all(hashes.get(n) == h for n, h in trained_on.items())

    def split_paths(self, split: str, verify_sha: bool) -> list[Path]:
        manifest = self.manifest()
        if manifest is None or not manifest.get("complete"):
            raise _not_prepared(f"No prepared data in {self.dir}")
        shards = [s for s in manifest["shards"] if s["split"] == split]
        for shard in shards:
            if problem := self.shard_problem(shard, full=verify_sha):
                path = self.dir / shard["name"]
                raise PrepareError(f"Shard {path} is unusable ({problem}); run `python prepare.py`.")
        return [self.dir / s["name"] for s in shards]


def _active_dataset(root: Path | None = None) -> Dataset:
    root = root or _cache_root()
    try:
        source = json.loads((root / "active.json").read_text(encoding="utf-8"))["source"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        raise _not_prepared("No prepared data") from None
    return Dataset(root, source)


def data_fingerprint(cache_dir: str | Path | None = None) -> dict:
    """What results depend on, hashed: every shard, the tokenizer and the validation tokens of the active dataset.

    Two caches with the same `data` value give comparable val_bpb; `prepare_args` rebuilds this dataset elsewhere
    (a worker node), except for the `local` source, whose folder exists on this machine only.
    """
    dataset = _active_dataset(Path(cache_dir).expanduser() if cache_dir is not None else None)
    if problems := dataset.problems(full=False):
        raise _not_prepared(f"The {dataset.source} data in {dataset.dir} is not ready ({'; '.join(problems[:3])})")
    manifest = dataset.manifest()
    parts = [s["sha256"] for s in manifest["shards"]] + [_sha256_file(dataset.tokenizer_path),
                                                         manifest["val_tokens"]["tokens"]["sha256"]]
    settings = manifest.get("settings", {})
    args = {"builtin": ["--source", "builtin"] + (["--builtin-mb", str(settings["builtin_mb"])]
                                                  if settings.get("builtin_mb") else []),
            "climbmix": ["--source", "climbmix", "--num-shards", str(settings.get("num_shards") or DEFAULT_NUM_SHARDS)],
            }.get(dataset.source)
    return {"source": dataset.source, "data": hashlib.sha256("\n".join(parts).encode()).hexdigest(),
            "prepare_args": args}


def ensure_prepared(cache_dir: str | Path | None = None) -> Path:
    """The active dataset's folder if data and tokenizer are in place (sizes checked), else NotPreparedError."""
    dataset = _active_dataset(Path(cache_dir).expanduser() if cache_dir is not None else None)
    if problems := dataset.problems(full=False):
        raise _not_prepared(f"The {dataset.source} data in {dataset.dir} is not ready ({'; '.join(problems[:3])})")
    return dataset.dir


def _write_parquet(path: Path, texts: list[str]) -> dict:
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table({"text": pa.array(texts, pa.string())}), tmp, row_group_size=ROW_GROUP_DOCS)
    os.replace(tmp, path)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256_file(path), "rows": len(texts)}


def _write_text_shards(dataset: Dataset, documents: Iterable[tuple[str, str]], settings: dict) -> None:
    """Write (key, text) documents as training shards plus one validation shard, pinned last.

    The split goes by key (a file, or a Parquet row), so no file feeds both; exact repeats of a document
    (licence headers, boilerplate) are kept once, so none can sit on both sides either.
    """
    dataset.dir.mkdir(parents=True, exist_ok=True)
    dataset.manifest_path.unlink(missing_ok=True)
    for old in dataset.dir.glob("shard_*.parquet*"):
        old.unlink()
    shards, train, val, chars, seen = [], [], [], 0, set()
    for key, text in documents:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if digest in seen:
            continue
        seen.add(digest)
        if _is_validation(key):
            val.append(text)
            continue
        train.append(text)
        chars += len(text)
        if chars >= SHARD_CHARS:
            shards.append(_write_parquet(dataset.dir / _shard_name(len(shards)), train) | {"split": "train"})
            train, chars = [], 0
    if train:
        shards.append(_write_parquet(dataset.dir / _shard_name(len(shards)), train) | {"split": "train"})
    if not shards or not val:
        raise PrepareError(f"Too little text for the {dataset.source} source: need both training and validation text.")
    shards.append(_write_parquet(dataset.dir / _shard_name(len(shards)), val) | {"split": "val"})
    dataset.write_manifest({"source": dataset.source, "settings": settings, "shards": shards, "complete": True})


def _chunk(text: str) -> list[str]:
    """Cut text into documents of about DOC_CHARS at line ends, so a long file yields many rows."""
    chunks, lines, size = [], [], 0
    for line in text.splitlines(keepends=True):
        if lines and size + len(line) > DOC_CHARS:
            chunks.append("".join(lines))
            lines, size = [], 0
        lines.append(line)
        size += len(line)
    if lines:
        chunks.append("".join(lines))
    return [c for c in chunks if c.strip()]


def _stdlib_files() -> tuple[Path, list[str]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__")]
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames if f.endswith(".py")]
    # Ordered by a hash of the path: deterministic, and any size cap still samples the whole library.
    return root, sorted(found, key=lambda p: (hashlib.sha256(p.encode()).hexdigest(), p))


def _builtin_documents(max_bytes: int) -> Iterator[tuple[str, str]]:
    root, files = _stdlib_files()
    used = 0
    with tqdm(total=max_bytes, unit="B", unit_scale=True, desc="builtin corpus", disable=None) as bar:
        for rel in files:
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # a few test files are deliberately not UTF-8
            size = min(len(text.encode("utf-8")), max_bytes - used)
            used += size
            bar.update(size)
            for chunk in _chunk(text):
                yield rel, chunk
            if used >= max_bytes:
                return


def _local_documents(folder: Path) -> Iterator[tuple[str, str]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".txt", ".parquet") and p.is_file())
    if not files:
        raise PrepareError(f"No .txt or .parquet files in {folder}.")
    for path in tqdm(files, desc="local corpus", disable=None):
        rel = path.relative_to(folder).as_posix()
        if path.suffix == ".txt":
            for chunk in _chunk(path.read_text(encoding="utf-8", errors="replace")):
                yield rel, chunk
            continue
        try:
            texts = pq.read_table(path, columns=["text"]).column("text").to_pylist()
        except (pa.ArrowInvalid, KeyError) as exc:
            raise PrepareError(f"{path}: not a Parquet file with a `text` column ({exc}).") from None
        for i, text in enumerate(texts):
            if text:
                yield f"{rel}:{i}", text


# ---------------------------------------------------------------------------------------------------
# climbmix download: parallel, retried with backoff, resumable (.part + HTTP Range), verified
# ---------------------------------------------------------------------------------------------------


class _BadShard(Exception):
    """The downloaded bytes are wrong: start over instead of resuming."""


def _data_url() -> str:
    return (os.environ.get("AUTORESEARCH_DATA_URL") or CLIMBMIX_URL).rstrip("/")


def _probe_network(url: str) -> str | None:
    """None when the shard server answers, else a short reason."""
    import requests

    try:
        response = requests.head(url, timeout=(5, 10), allow_redirects=True)
    except requests.RequestException as exc:
        return f"{type(exc).__name__} reaching {urlsplit(url).netloc}"
    return None if response.ok else f"HTTP {response.status_code} from {urlsplit(url).netloc}"


def _check_parquet(path: Path) -> int:
    try:
        meta = pq.ParquetFile(path).metadata  # reads the footer: a truncated file fails here
    except (pa.ArrowInvalid, OSError) as exc:
        raise _BadShard(f"not a readable Parquet file ({exc})") from None
    if "text" not in meta.schema.names:
        raise _BadShard("no `text` column")
    return meta.num_rows


def _fetch_into_part(session, url: str, part: Path) -> str | None:
    """Fetch url into part, continuing what part already holds. Returns the server's sha256 if it gives one."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    with session.get(url, headers=headers, stream=True, timeout=(10, 60)) as response:
        if response.status_code == 416:  # nothing left to send: part is complete, or longer than the file
            total = response.headers.get("Content-Range", "").rpartition("/")[2]
            if not total.isdigit() or int(total) != have:
                raise _BadShard(f"partial file of {have} bytes does not match the server's {total or '?'}")
            return None
        response.raise_for_status()
        if response.status_code == 206:
            start, _, total = response.headers.get("Content-Range", "").removeprefix("bytes ").partition("/")
            if not start.startswith(f"{have}-"):
                raise _BadShard(f"server resumed at {start}, not at byte {have}")
            mode, expected = "ab", int(total) if total.isdigit() else None
        else:  # 200: the server ignored the range, start from scratch
            mode = "wb"
            length = response.headers.get("Content-Length")
            expected = int(length) if length and length.isdigit() else None
        response.raw.enforce_content_length = False  # keep every byte of a cut transfer; the size is checked below
        with open(part, mode) as fh:
            for block in response.iter_content(chunk_size=1 << 20):
                fh.write(block)
        # Hugging Face gives an LFS file's sha256 in X-Linked-Etag, on the redirect to its storage.
        tags = [r.headers.get("X-Linked-Etag", "") for r in (*response.history, response)]
    size = part.stat().st_size
    if expected is not None and size != expected:
        raise OSError(f"truncated: {size} of {expected} bytes")  # a dropped connection: resume next time
    return next((m.group(0).lower() for t in tags if (m := re.search(r"\b[0-9a-fA-F]{64}\b", t))), None)


def _download_shard(base_url: str, name: str, dest_dir: Path) -> dict:
    import requests

    dest, part = dest_dir / name, dest_dir / (name + ".part")
    url = f"{base_url}/{name}"
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            with requests.Session() as session:  # one per thread: a Session is not thread-safe
                server_sha = _fetch_into_part(session, url, part)
            rows = _check_parquet(part)
            sha = _sha256_file(part)
            if server_sha and server_sha != sha:
                raise _BadShard(f"sha256 {sha[:12]}... differs from the server's {server_sha[:12]}...")
            os.replace(part, dest)
            return {"name": name, "bytes": dest.stat().st_size, "sha256": sha, "rows": rows}
        except _BadShard as exc:
            part.unlink(missing_ok=True)
            reason = str(exc)
        except (requests.RequestException, OSError) as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        if attempt < DOWNLOAD_ATTEMPTS:
            tqdm.write(f"  {name}: attempt {attempt} failed ({reason}); retrying")
            time.sleep(DOWNLOAD_BACKOFF_S * 2 ** (attempt - 1))
    raise PrepareError(f"Could not download {url} after {DOWNLOAD_ATTEMPTS} attempts: {reason}")


def download_climbmix(dataset: Dataset, num_shards: int, workers: int = 8) -> None:
    """Fetch training shards 0..num_shards-1 and the pinned validation shard; keep what already verifies."""
    dataset.dir.mkdir(parents=True, exist_ok=True)
    known = {s["name"]: s for s in (dataset.manifest() or {}).get("shards", [])}
    wanted = [(_shard_name(i), "train") for i in range(min(num_shards, CLIMBMIX_VAL_INDEX))]
    wanted.append((_shard_name(CLIMBMIX_VAL_INDEX), "val"))
    shards, todo = {}, []
    for name, split in wanted:
        if name in known and (problem := dataset.shard_problem(known[name], full=True)) is None:
            shards[name] = known[name] | {"split": split}
            continue
        if name in known:  # corrupt or truncated on disk: never used, fetched again
            tqdm.write(f"  {name}: {problem}; downloading it again")
            (dataset.dir / name).unlink(missing_ok=True)
        todo.append((name, split))
    base_url = _data_url()

    def save(complete: bool) -> None:
        ordered = [shards[n] for n, _ in wanted if n in shards]
        settings = {"url": base_url, "num_shards": num_shards}
        dataset.write_manifest({"source": "climbmix", "settings": settings, "shards": ordered, "complete": complete})

    failures = []
    with ThreadPoolExecutor(max(1, min(workers, len(todo) or 1))) as pool:
        futures = {pool.submit(_download_shard, base_url, n, dataset.dir): (n, s) for n, s in todo}
        for future in tqdm(as_completed(futures), total=len(futures), desc="download", unit="shard", disable=None):
            name, split = futures[future]
            try:
                shards[name] = future.result() | {"split": split}
                save(complete=False)  # progress survives an interruption
            except PrepareError as exc:
                failures.append(str(exc))
    save(complete=not failures)
    if failures:
        raise PrepareError("Download incomplete; run prepare again to resume.\n" + "\n".join(failures))


# ---------------------------------------------------------------------------------------------------
# Tokenizer: BPE trained with rustbpe on the training shards, served by tiktoken.
# ---------------------------------------------------------------------------------------------------


def _training_texts(paths: list[Path], used: dict[str, str]) -> Iterator[str]:
    chars = 0
    for path in paths:
        used[path.name] = _sha256_file(path)
        pf = pq.ParquetFile(path)
        for group in range(pf.num_row_groups):
            for text in pf.read_row_group(group, columns=["text"]).column("text").to_pylist():
                doc = text[:TOKENIZER_DOC_CAP]
                chars += len(doc)
                yield doc
                if chars >= TOKENIZER_MAX_CHARS:
                    return


def train_tokenizer(dataset: Dataset) -> None:
    import rustbpe

    paths = dataset.split_paths("train", verify_sha=False)
    started = time.time()
    print(f"tokenizer: training BPE ({VOCAB_SIZE} tokens) on {len(paths)} training shard(s) ...", flush=True)
    used: dict[str, str] = {}
    bpe = rustbpe.Tokenizer()
    bpe.train_from_iterator(_training_texts(paths, used), VOCAB_SIZE - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = sorted(((bytes(token), rank) for token, rank in bpe.get_mergeable_ranks()), key=lambda item: item[1])
    if len(ranks) != VOCAB_SIZE - len(SPECIAL_TOKENS) or [r for _, r in ranks] != list(range(len(ranks))):
        raise PrepareError(f"The training text only supports {len(ranks)} BPE tokens; add more data.")
    meta = {
        "pattern": bpe.get_pattern(),
        "mergeable_ranks": [base64.b64encode(token).decode("ascii") for token, _ in ranks],
        "special_tokens": {name: len(ranks) + i for i, name in enumerate(SPECIAL_TOKENS)},
        # Raw token bytes, not decoded text: a token may hold part of a multi-byte character.
        "token_bytes": [len(token) for token, _ in ranks] + [0] * len(SPECIAL_TOKENS),
        "trained_on": used,
    }
    _atomic_write_text(dataset.tokenizer_path, json.dumps(meta, sort_keys=True))
    tokenizer = Tokenizer.from_directory(dataset.dir)
    sample = "Hello world! Numbers: 12345. Unicode: 你好, naïve café 🙂"
    if tokenizer.decode(tokenizer.encode(sample)) != sample:
        raise PrepareError("Tokenizer round-trip check failed.")
    print(f"tokenizer: done in {time.time() - started:.1f}s", flush=True)


def write_val_tokens(dataset: Dataset) -> None:
    """Tokenise the validation split once, in the order evaluation reads it, and record it in the manifest."""
    import numpy as np

    started = time.time()
    tokenizer = Tokenizer.from_directory(dataset.dir)
    paths = dataset.split_paths("val", verify_sha=True)
    ids: list[np.ndarray] = []
    count, complete = 0, False
    for document, epoch in _token_documents(tokenizer, _texts(paths, None)):
        if epoch > 1:
            complete = True  # the whole split is stored; evaluation cycles through it as the loader does
            break
        ids.append(np.asarray(document, dtype=np.uint16))
        count += len(document)
        if count >= VAL_TOKENS_STORED:
            break
    tokens = np.concatenate(ids) if ids else np.zeros(0, dtype=np.uint16)
    ends = np.cumsum([len(d) for d in ids], dtype=np.int64)
    entry = {"documents": len(ids), "count": int(tokens.size), "complete": complete,
             "from": {"val": [s["sha256"] for s in dataset.manifest()["shards"] if s["split"] == "val"],
                      "tokenizer": _sha256_file(dataset.tokenizer_path)}}
    for key, path, array in (("tokens", dataset.val_tokens_path, tokens), ("ends", dataset.val_ends_path, ends)):
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, array)
        os.replace(tmp, path)
        entry[key] = {"name": path.name, "bytes": path.stat().st_size, "sha256": _sha256_file(path)}
    dataset.write_manifest({**dataset.manifest(), "val_tokens": entry})
    print(f"validation tokens: {tokens.size:,} in {len(ids):,} documents{' (whole split)' if complete else ''}, "
          f"{time.time() - started:.1f}s", flush=True)


def _val_documents_from(dataset: Dataset, tokenizer: Tokenizer, first: int) -> Iterator[tuple[object, int]]:
    """Validation documents from index `first` on, as the loader reads them: stored ones, then tokenised text."""
    import numpy as np

    entry = dataset.manifest()["val_tokens"]
    tokens = np.load(dataset.val_tokens_path, mmap_mode="r")
    ends = np.load(dataset.val_ends_path).tolist()
    starts = [0, *ends[:-1]]
    for start, end in zip(starts[first:], ends[first:], strict=True):
        yield tokens[start:end], 1
    rest = _token_documents(tokenizer, _texts(dataset.split_paths("val", verify_sha=False), None))
    for index, (ids, epoch) in enumerate(rest):
        if epoch > 1 or index >= max(first, entry["documents"]):
            yield ids, epoch


def _val_batches(dataset: Dataset, tokenizer: Tokenizer, batch_size: int, seq_len: int,
                 device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Validation (inputs, targets) batches exactly as `make_dataloader` packs them, from the stored tokens.

    Documents lie back to back in the stored array and a row is whole documents plus the start of one cut
    at the row's end, so every row is one slice of it: the rows are gathered at once. The next row starts
    at the first document that begins at or after the cut. A split stored whole is cycled, as the loader
    does; past the stored part of a larger one, the rest is tokenised as the loader would.
    """
    import numpy as np

    if problem := dataset.val_tokens_problem(full=True):
        raise _not_prepared(f"The validation tokens in {dataset.dir} are not usable ({problem})")
    complete = dataset.manifest()["val_tokens"]["complete"]
    tokens = np.load(dataset.val_tokens_path, mmap_mode="r")
    ends = np.load(dataset.val_ends_path)
    starts = np.concatenate(([0], ends[:-1])).astype(np.int64)
    total, row_len = int(tokens.size), seq_len + 1
    if complete and total:  # the stream repeats: lay enough copies end to end for a row to run over the seam
        tokens = np.tile(np.asarray(tokens), 1 + -(-row_len // total))
    doc = 0
    while True:
        row_starts = []
        for _ in range(batch_size):
            if doc >= len(starts) or (not complete and starts[doc] + row_len > total):
                break  # beyond what is stored: continue document by document
            row_starts.append(int(starts[doc]))
            cut = int(starts[doc]) + row_len
            doc = int(np.searchsorted(starts, cut % total if complete else cut))
            if doc == len(starts) and complete:
                doc = 0
        if len(row_starts) < batch_size:
            break
        rows = torch.from_numpy(tokens[np.asarray(row_starts)[:, None] + np.arange(row_len)].astype(np.int64))
        rows = (rows.pin_memory() if device.type == "cuda" else rows).to(device, non_blocking=True)
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous()
    # the unusual case: more rows than the stored tokens hold (a split larger than VAL_TOKENS_STORED)
    documents = _val_documents_from(dataset, tokenizer, doc)
    for start in reversed(row_starts):  # rows of the unfinished batch, already within the stored part
        documents = _prepend_row(tokens[start:start + row_len], documents)
    yield from _pack(documents, batch_size, row_len, device)


def _prepend_row(row, documents: Iterator) -> Iterator:
    yield row, 1
    yield from documents


def _pack(documents: Iterator, batch_size: int, row_len: int, device: torch.device):
    import numpy as np

    while True:
        rows = np.empty((batch_size, row_len), dtype=np.int64)
        for r in range(batch_size):
            filled = 0
            while filled < row_len:
                ids, _ = next(documents)
                take = min(len(ids), row_len - filled)
                rows[r, filled:filled + take] = ids[:take]
                filled += take
        batch = torch.from_numpy(rows)
        batch = (batch.pin_memory() if device.type == "cuda" else batch).to(device, non_blocking=True)
        yield batch[:, :-1].contiguous(), batch[:, 1:].contiguous()


class Tokenizer:
    """A tiktoken.Encoding with a BOS special token, loaded from the prepared cache."""

    def __init__(self, encoding: tiktoken.Encoding, token_bytes: list[int], directory: Path):
        self.enc = encoding
        self.token_bytes = token_bytes
        self.directory = directory
        self.bos_token_id = encoding.encode_single_token(BOS_TOKEN)

    @classmethod
    def from_directory(cls, path: str | Path | None = None) -> Tokenizer:
        """Load from a dataset folder or a cache root (default: the active dataset of the cache)."""
        directory = Path(path).expanduser() if path is not None else _active_dataset().dir
        if not (directory / "tokenizer.json").exists() and (directory / "active.json").exists():
            directory = _active_dataset(directory).dir
        file = directory / "tokenizer.json"
        try:
            meta = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _not_prepared(f"No tokenizer at {file}") from None
        ranks = {base64.b64decode(token): rank for rank, token in enumerate(meta["mergeable_ranks"])}
        encoding = tiktoken.Encoding(
            name="autoresearch", pat_str=meta["pattern"], mergeable_ranks=ranks, special_tokens=meta["special_tokens"]
        )
        return cls(encoding, meta["token_bytes"], directory)

    def get_vocab_size(self) -> int:
        return self.enc.n_vocab

    def get_bos_token_id(self) -> int:
        return self.bos_token_id

    def encode(self, text: str) -> list[int]:
        """Token ids of text; special-token strings inside text are treated as ordinary text."""
        return self.enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str], prepend_bos: bool = False) -> list[list[int]]:
        rows = self.enc.encode_ordinary_batch(texts, num_threads=min(8, os.cpu_count() or 1))
        return [[self.bos_token_id, *row] for row in rows] if prepend_bos else rows

    def decode(self, ids: Iterable[int]) -> str:
        return self.enc.decode(list(ids))


def get_token_bytes(device: str | torch.device = "cpu") -> torch.Tensor:
    """UTF-8 byte length of every token id of the active tokenizer (0 for special tokens)."""
    return torch.tensor(Tokenizer.from_directory().token_bytes, dtype=torch.long, device=device)


# ---------------------------------------------------------------------------------------------------
# Dataloader: every row starts with BOS; documents are packed back to back with no padding, and the
# document that does not fit at the end of a row is cropped there (its tail is dropped).
# ---------------------------------------------------------------------------------------------------


def _texts(paths: list[Path], rng: random.Random | None) -> Iterator[tuple[str, int]]:
    epoch = 1
    while True:
        order = list(paths)
        if rng is not None:
            rng.shuffle(order)
        for path in order:
            pf = pq.ParquetFile(path)
            for group in range(pf.num_row_groups):
                texts = pf.read_row_group(group, columns=["text"]).column("text").to_pylist()
                if rng is not None:
                    rng.shuffle(texts)
                for text in texts:
                    yield text, epoch
        epoch += 1


def _token_documents(tokenizer: Tokenizer, texts: Iterator[tuple[str, int]], batch: int = 64):
    while True:
        pulled = [next(texts) for _ in range(batch)]
        encoded = tokenizer.encode_batch([text for text, _ in pulled], prepend_bos=True)
        yield from zip(encoded, (epoch for _, epoch in pulled), strict=True)


def make_dataloader(tokenizer: Tokenizer, batch_size: int, seq_len: int, split: str, seed: int = SEED,
                    device: str | torch.device = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Endless (inputs, targets, epoch) batches of shape [batch_size, seq_len] on device.

    The training order is shuffled deterministically by seed; validation is always read in the same
    order, whatever the seed, so every model is scored on the same tokens.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    paths = _active_dataset().split_paths(split, verify_sha=split == "val")
    rng = random.Random(seed) if split == "train" else None
    documents = _token_documents(tokenizer, _texts(paths, rng))
    device = torch.device(device)
    row_len = seq_len + 1
    while True:
        rows = torch.empty((batch_size, row_len), dtype=torch.long, pin_memory=device.type == "cuda")
        for r in range(batch_size):
            filled = 0
            while filled < row_len:
                ids, epoch = next(documents)
                take = min(len(ids), row_len - filled)
                rows[r, filled:filled + take] = torch.tensor(ids[:take], dtype=torch.long)
                filled += take
        rows = rows.to(device, non_blocking=True)
        yield rows[:, :-1].contiguous(), rows[:, 1:].contiguous(), epoch


# ---------------------------------------------------------------------------------------------------
# Evaluation (the fixed metric): bits per byte of the validation text, from the model's own logits.
# ---------------------------------------------------------------------------------------------------


def _model_device(model: torch.nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _logits(model, idx: torch.Tensor, vocab: int) -> torch.Tensor:
    out = model(idx)
    if not isinstance(out, torch.Tensor):
        raise EvaluationError(f"model(idx) must return a logits tensor, got {type(out).__name__}")
    want = (*idx.shape, vocab)
    if tuple(out.shape) != want:
        raise EvaluationError(f"model(idx) returned logits of shape {tuple(out.shape)}; expected [B, T, V] = {want}")
    return out


def _probe_causality(model, x: torch.Tensor, logits: torch.Tensor, vocab: int) -> dict:
    """Change every token after a random cut (one cut per row); logits up to the cut must not move.

    With a cut per row, a model that leaks at only some positions is still caught with high probability,
    and a change seen in a row whose own tokens up to its cut are intact also catches leaks across rows.
    """
    batch, seq_len = x.shape
    draw = random.SystemRandom()  # unpredictable, so a model cannot special-case the probe
    generator = torch.Generator(device=x.device).manual_seed(draw.randrange(2**63))
    cuts = torch.randint(0, seq_len - 1, (batch, 1), device=x.device, generator=generator)
    future = torch.arange(seq_len, device=x.device) > cuts
    shift = torch.randint(1, vocab, x.shape, device=x.device, generator=generator)
    perturbed = torch.where(future, (x + shift) % vocab, x)
    after = _logits(model, perturbed, vocab)
    moved = 0.0
    for rows in range(0, batch, 16):  # in slices, to keep float32 differences of a big batch small
        change = (after[rows:rows + 16].float() - logits[rows:rows + 16].float()).abs().amax(dim=-1)
        moved = max(moved, torch.where(future[rows:rows + 16], 0.0, change).max().item())
    scale = logits.abs().amax().float().item()
    # Deterministic kernels give exactly 0 (measured on CPU fp32 and H100 bf16); the slack is for rounding.
    tolerance = (1e-3 if x.is_cuda else 1e-5) * (1.0 + scale)
    if not moved <= tolerance:
        raise CausalityError(
            f"Model is not causal: changing the tokens after a cut moved the logits at or before the cut by up to "
            f"{moved:.3g} (tolerance {tolerance:.3g}). Each position may only see itself and earlier tokens."
        )
    return {"max_abs_diff": moved, "tolerance": tolerance, "cuts": sorted(cuts.flatten().tolist())[:8]}


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, tokenizer: Tokenizer, batch_size: int,
                 device: str | torch.device | None = None) -> float:
    """Bits per byte of EVAL_TOKENS validation tokens at MAX_SEQ_LEN.

    Sums the cross-entropy (nats) of every target and the UTF-8 bytes of those targets, special tokens
    excluded from both, then converts nats per byte to bits per byte: independent of the vocabulary.
    Writes the result record to AUTORESEARCH_RESULT_PATH when it is set.
    """
    started = time.time()
    device = torch.device(device) if device is not None else _model_device(model)
    dataset = _active_dataset()
    # The reference tokenizer comes from disk, not from the caller, so its byte counts cannot be altered.
    reference = Tokenizer.from_directory(dataset.dir)
    vocab = reference.get_vocab_size()
    if tokenizer.get_vocab_size() != vocab:
        raise EvaluationError(f"tokenizer has {tokenizer.get_vocab_size()} tokens, the prepared one {vocab}")
    tokenizer = reference
    token_bytes = torch.tensor(tokenizer.token_bytes, dtype=torch.long, device=device)
    loader = _val_batches(dataset, tokenizer, batch_size, MAX_SEQ_LEN, device)  # prepare tokenised them once
    steps = max(1, EVAL_TOKENS // (batch_size * MAX_SEQ_LEN))
    was_training = model.training
    model.eval()  # dropout and the like off: the probe and the score must be deterministic
    try:
        nats = torch.zeros((), dtype=torch.float64, device=device)
        nbytes = torch.zeros((), dtype=torch.long, device=device)
        ntokens = torch.zeros((), dtype=torch.long, device=device)
        x, y = next(loader)
        logits = _logits(model, x, vocab)
        if not torch.isfinite(logits).all():
            raise EvaluationError("model produced NaN or infinite logits on validation data")
        probe = _probe_causality(model, x, logits, vocab)
        for step in range(steps):
            if step > 0:
                x, y = next(loader)
                logits = _logits(model, x, vocab)
            for rows in range(0, batch_size, 16):  # in slices: float32 log-probabilities of a batch can be huge
                target = y[rows:rows + 16].reshape(-1)
                loss = F.cross_entropy(logits[rows:rows + 16].reshape(-1, vocab).float(), target, reduction="none")
                weight = token_bytes[target]
                scored = weight > 0
                nats += torch.where(scored, loss, 0.0).double().sum()  # no boolean indexing: no device sync
                nbytes += weight.sum()
                ntokens += scored.sum()
    finally:
        model.train(was_training)
    total_nats, total_bytes, total_tokens = nats.item(), int(nbytes.item()), int(ntokens.item())
    val_bpb = total_nats / (math.log(2) * total_bytes)
    if not math.isfinite(val_bpb):
        raise EvaluationError(f"val_bpb is {val_bpb}: the model produced NaN or infinite logits on validation data")
    record = {
        "val_bpb": val_bpb,
        "tokens": total_tokens,
        "bytes": total_bytes,
        "nats": total_nats,
        "prepare_sha256": _sha256_file(Path(__file__)),
        "eval_seconds": round(time.time() - started, 3),
        "seq_len": MAX_SEQ_LEN,
        "batch_size": batch_size,
        "eval_tokens": EVAL_TOKENS,
        "vocab_size": vocab,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "data_source": dataset.source,
        "time_budget": TIME_BUDGET,
        "seed": SEED,
        "causality_probe": probe,
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if result_path := os.environ.get("AUTORESEARCH_RESULT_PATH"):
        _atomic_write_text(Path(result_path), json.dumps(record, indent=1))
    return val_bpb


# ---------------------------------------------------------------------------------------------------
# Building the cache
# ---------------------------------------------------------------------------------------------------


@contextmanager
def _locked(root: Path):
    """One preparer per cache at a time: two would overwrite each other's shards."""
    import fcntl

    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".prepare.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _unmet_settings(dataset: Dataset, settings: dict) -> list[str]:
    recorded = (dataset.manifest() or {}).get("settings", {})
    return [f"{k} {recorded.get(k)} -> {v}" for k, v in settings.items() if v is not None and recorded.get(k) != v]


def run_prepare(source: str = "auto", *, num_shards: int | None = None, local_dir: str | Path | None = None,
                builtin_mb: float | None = None, download_workers: int = 8, cache_dir: str | Path | None = None,
                force: bool = False) -> Path:
    """Prepare data and tokenizer for `source` and make it the active dataset. Returns its folder.

    Idempotent: a dataset that is complete, verifies (sizes and sha256) and has its tokenizer is left
    alone. num_shards / builtin_mb left as None keep what an existing dataset has (defaults when new).
    """
    if source not in SOURCES:
        raise ValueError(f"Unknown data source {source!r}; valid sources: {', '.join(SOURCES)}.")
    if source == "local" and local_dir is None:
        raise ValueError("The local source needs a folder: --local-dir DIR (with .txt or .parquet files).")
    if source != "local" and local_dir is not None:
        raise ValueError("--local-dir is only used with --source local.")
    if num_shards == -1:
        num_shards = CLIMBMIX_VAL_INDEX  # every training shard
    if num_shards is not None and num_shards < 1:
        raise ValueError(f"--num-shards must be at least 1 (or -1 for all), got {num_shards}")
    if builtin_mb is not None and not builtin_mb > 0:
        raise ValueError(f"--builtin-mb must be positive, got {builtin_mb}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else _cache_root()
    with _locked(root):
        if source == "auto":
            source = _resolve_auto(root, force)
        dataset = Dataset(root, source)
        settings = {
            "builtin": {"builtin_mb": builtin_mb},
            "local": {"local_dir": str(Path(local_dir or ".").expanduser().resolve())},
            "climbmix": {"num_shards": num_shards},
        }[source]
        problems = _unmet_settings(dataset, settings) + dataset.problems(full=True)
        if force or problems:
            if dataset.manifest() is not None and problems and not force:
                print(f"prepare: {source} cache needs work ({'; '.join(problems[:3])})", flush=True)
            _build(dataset, settings, download_workers, force)
        else:
            print(f"prepare: already prepared ({source}) at {dataset.dir}", flush=True)
        _atomic_write_text(root / "active.json", json.dumps({"source": source}))
    return dataset.dir


def _resolve_auto(root: Path, force: bool) -> str:
    if not force:
        try:
            active = _active_dataset(root)
            if not active.problems(full=True):
                return active.source
        except NotPreparedError:
            pass
    url = f"{_data_url()}/{_shard_name(CLIMBMIX_VAL_INDEX)}"
    reason = _probe_network(url)
    if reason is None:
        return "climbmix"
    print(f"prepare: climbmix unreachable ({reason}); using the builtin offline corpus (Python standard library "
          "sources) instead.", flush=True)
    return "builtin"


def _build(dataset: Dataset, settings: dict, workers: int, force: bool) -> None:
    started = time.time()
    if dataset.source == "climbmix":
        download_climbmix(dataset, settings["num_shards"] or DEFAULT_NUM_SHARDS, workers)
    elif force or _unmet_settings(dataset, settings) or dataset.shard_problems(full=True):
        # Text sources are cheap and deterministic to rebuild: any damaged shard means a full rebuild.
        if dataset.source == "builtin":
            recorded = (dataset.manifest() or {}).get("settings", {}).get("builtin_mb")  # a repair keeps the size
            mb = settings["builtin_mb"] or recorded or DEFAULT_BUILTIN_MB
            _write_text_shards(dataset, _builtin_documents(int(mb * 1e6)), {"builtin_mb": mb})
        else:
            folder = Path(settings["local_dir"])
            if not folder.is_dir():
                raise PrepareError(f"--local-dir {folder} is not a folder.")
            _write_text_shards(dataset, _local_documents(folder), {"local_dir": str(folder)})
    manifest = dataset.manifest()
    if force or not dataset.tokenizer_valid(manifest):
        train_tokenizer(dataset)
    if force or dataset.val_tokens_problem(full=True):
        write_val_tokens(dataset)
    shards = manifest["shards"]
    total = sum(s["bytes"] for s in shards) / 1e6
    print(f"prepare: ready ({dataset.source}): {len(shards) - 1} training shard(s) + 1 validation shard, "
          f"{total:.1f} MB, in {time.time() - started:.1f}s at {dataset.dir}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Prepare data and tokenizer for autoresearch (idempotent).")
    parser.add_argument("--source", default="auto", choices=SOURCES,
                        help="where the text comes from (default: auto = climbmix, or builtin when offline)")
    parser.add_argument("--num-shards", type=int, default=None,
                        help=f"climbmix training shards, -1 for all (default {DEFAULT_NUM_SHARDS})")
    parser.add_argument("--download-workers", type=int, default=8, help="parallel downloads")
    parser.add_argument("--builtin-mb", type=float, default=None,
                        help=f"size of the builtin corpus in MB (default {DEFAULT_BUILTIN_MB:g})")
    parser.add_argument("--local-dir", type=Path, default=None, help="folder of .txt/.parquet files (--source local)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache looks prepared")
    parser.add_argument("--fingerprint", action="store_true",
                        help="print the active dataset's fingerprint (JSON) and exit; fails when not prepared")
    args = parser.parse_args(argv)
    if args.fingerprint:
        try:
            print(json.dumps(data_fingerprint()))
        except (NotPreparedError, PrepareError) as exc:
            print(f"prepare: error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        run_prepare(args.source, num_shards=args.num_shards, local_dir=args.local_dir, builtin_mb=args.builtin_mb,
                    download_workers=args.download_workers, force=args.force)
    except (PrepareError, ValueError) as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
