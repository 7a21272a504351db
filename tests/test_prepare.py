"""prepare.py: cache building, tokenizer, dataloader, evaluator and the resumable download."""

import hashlib
import json
import math
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import prepare

REPO = Path(__file__).resolve().parents[1]


def shard_files(dataset_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dataset_dir.glob("shard_*.parquet"))}


def read_texts(path: Path) -> list[str]:
    return pq.read_table(path).column("text").to_pylist()


# --- building the cache ----------------------------------------------------------------------------------------


def test_builtin_build_is_deterministic_idempotent_and_repairs_damage(prepared_cache, tmp_path, capsys):
    from conftest import TEST_CORPUS_MB

    first = prepared_cache / "builtin"
    second = prepare.run_prepare("builtin", builtin_mb=TEST_CORPUS_MB, cache_dir=tmp_path)
    assert shard_files(second) == shard_files(first) and len(shard_files(first)) >= 2
    tokenizer = f"tokenizer{prepare.VOCAB_FILES}.json"
    assert (second / tokenizer).read_bytes() == (first / tokenizer).read_bytes()

    capsys.readouterr()
    stamp = (second / "shard_00000.parquet").stat().st_mtime_ns
    prepare.run_prepare("builtin", cache_dir=tmp_path)
    assert "already prepared" in capsys.readouterr().out
    assert (second / "shard_00000.parquet").stat().st_mtime_ns == stamp

    # A corrupt shard (same size, one byte flipped) is caught by its sha256 and rebuilt, never used.
    damaged = second / "shard_00000.parquet"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    prepare.run_prepare("builtin", cache_dir=tmp_path)
    assert "sha256 differs" in capsys.readouterr().out
    assert shard_files(second) == shard_files(first)


def test_truncated_shard_is_refused_by_the_dataloader(prepared_cache, tmp_path, monkeypatch):
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(prepared_cache, copy)
    val = json.loads((copy / "builtin" / "manifest.json").read_text())["shards"][-1]["name"]
    path = copy / "builtin" / val
    path.write_bytes(path.read_bytes()[:-100])
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(copy))
    tokenizer = prepare.Tokenizer.from_directory()
    with pytest.raises(prepare.PrepareError, match=rf"{val} is unusable .* run `python prepare.py`"):
        next(prepare.make_dataloader(tokenizer, 2, 16, "val"))


def test_train_and_validation_never_overlap(prepared_cache):
    manifest = json.loads((prepared_cache / "builtin" / "manifest.json").read_text())
    splits = [s["split"] for s in manifest["shards"]]
    assert splits == ["train"] * (len(splits) - 1) + ["val"]  # validation is pinned last
    train = {t for s in manifest["shards"][:-1] for t in read_texts(prepared_cache / "builtin" / s["name"])}
    val = read_texts(prepared_cache / "builtin" / manifest["shards"][-1]["name"])
    assert val and train and not train & set(val)
    tokenizer = prepared_cache / "builtin" / f"tokenizer{prepare.VOCAB_FILES}.json"
    trained_on = json.loads(tokenizer.read_text())["trained_on"]
    assert manifest["shards"][-1]["name"] not in trained_on


def test_unknown_source_is_an_error_listing_the_valid_ones(tmp_path, capsys):
    with pytest.raises(ValueError, match="valid sources: auto, climbmix, builtin, local"):
        prepare.run_prepare("s3", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="--builtin-mb must be positive"):
        prepare.run_prepare("builtin", builtin_mb=0, cache_dir=tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        prepare.main(["--source", "s3"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "invalid choice: 's3'" in err and all(repr(name) in err for name in prepare.SOURCES)


def test_missing_cache_says_to_run_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(tmp_path / "empty"))
    for action in (prepare.Tokenizer.from_directory, prepare.ensure_prepared, lambda: prepare.get_token_bytes()):
        with pytest.raises(prepare.NotPreparedError, match=r"python prepare.py.*autoresearch prepare"):
            action()


def test_local_folder_source(prepared_cache, tmp_path):
    folder = tmp_path / "mine"
    (folder / "sub").mkdir(parents=True)
    texts = read_texts(prepared_cache / "builtin" / "shard_00000.parquet")
    half = len(texts) // 2
    (folder / "sub" / "notes.txt").write_text("\n".join(texts[:half]))
    pq.write_table(pa.table({"text": texts[half:]}), folder / "more.parquet")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    dataset_dir = prepare.run_prepare("local", local_dir=folder, cache_dir=tmp_path / "cache")
    assert dataset_dir == tmp_path / "cache" / "local"
    assert json.loads((tmp_path / "cache" / "active.json").read_text()) == {"source": "local"}
    assert prepare.Tokenizer.from_directory(dataset_dir).get_vocab_size() == prepare.VOCAB_SIZE
    with pytest.raises(ValueError, match="--local-dir"):
        prepare.run_prepare("local", cache_dir=tmp_path / "cache")


# --- tokenizer -------------------------------------------------------------------------------------------------

TRICKY = [
    "",
    " ",
    "\n\n\r\n\t  \u00a0",
    "Hello, world!",
    "naïve café — “quotes” «guillemets»",
    "日本語のテキストと中文文本",
    "emoji 🙂👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 skin 👍🏽",
    "combining e\u0301 a\u0308 zero\u200bwidth\u200djoiner",
    "right-to-left עברית العربية",
    "\x00\x01\x7f control",
    "<|bos|> looks special but is text",
    "digits 1234567890 3.14159 -0.0 1e-9",
    "x" * 5000,
    "def f(x):\n    return x ** 2  # comment\n",
    "\U0010ffff\U0001f600\ufffd",
]


def random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    ranges = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x4E00, 0x9FFF), (0x1F300, 0x1FAFF),
              (0x0, 0x1F), (0xE000, 0xF8FF), (0x10000, 0x10FFFF)]
    out = []
    for _ in range(count):
        chars = []
        for _ in range(rng.randrange(1, 60)):
            lo, hi = rng.choice(ranges)
            code = rng.randint(lo, hi)
            chars.append(chr(code) if not 0xD800 <= code <= 0xDFFF else "?")
        out.append("".join(chars))
    return out


def test_tokenizer_round_trips_unicode_and_counts_bytes(prepared_cache):
    tokenizer = prepare.Tokenizer.from_directory()
    token_bytes = prepare.get_token_bytes()
    assert tokenizer.get_vocab_size() == prepare.VOCAB_SIZE == len(token_bytes)
    assert token_bytes[tokenizer.get_bos_token_id()] == 0
    for text in TRICKY + random_texts(300):
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert tokenizer.get_bos_token_id() not in ids
        assert int(token_bytes[ids].sum()) == len(text.encode("utf-8"))  # bytes per token add up exactly


# --- dataloader ------------------------------------------------------------------------------------------------


def batches(split: str, count: int, seed: int = 42, batch_size: int = 4, seq_len: int = 64):
    tokenizer = prepare.Tokenizer.from_directory()
    loader = prepare.make_dataloader(tokenizer, batch_size, seq_len, split, seed=seed)
    return [next(loader) for _ in range(count)]


def test_dataloader_rows_start_with_bos_and_are_deterministic(prepared_cache):
    bos = prepare.Tokenizer.from_directory().get_bos_token_id()
    first = batches("train", 5)
    for x, y, epoch in first:
        assert x.shape == y.shape == (4, 64) and x.dtype == torch.long and epoch == 1
        assert (x[:, 0] == bos).all()
        assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    again = batches("train", 5)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    other_seed = batches("train", 5, seed=7)
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other_seed, strict=True))
    # Validation reads the same tokens whatever the seed: every model is scored on the same text.
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches("val", 3), batches("val", 3, seed=7), strict=True))


def test_dataloader_packs_documents_without_padding(prepared_cache):
    tokenizer = prepare.Tokenizer.from_directory()
    bos = tokenizer.get_bos_token_id()
    x, y, _ = batches("val", 1, batch_size=8, seq_len=512)[0]
    row = torch.cat([x[0], y[0, -1:]]).tolist()
    starts = [i for i, t in enumerate(row) if t == bos]
    assert starts[0] == 0 and len(starts) >= 2  # several documents share a row, each opened by BOS
    # Documents appear in validation order, whole except the last one in the row, which is cropped.
    first_doc = read_texts(prepared_cache / "builtin" / sorted(shard_files(prepared_cache / "builtin"))[-1])[0]
    assert row[1:starts[1]] == tokenizer.encode(first_doc)


# --- evaluator -------------------------------------------------------------------------------------------------


class Uniform(torch.nn.Module):
    def __init__(self, vocab: int = prepare.VOCAB_SIZE):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


class PeeksAhead(torch.nn.Module):
    """A bigram 'model' that cheats: its logits at t favour the token at t+1."""

    def forward(self, idx):
        return 10.0 * torch.nn.functional.one_hot(torch.roll(idx, -1, dims=1), prepare.VOCAB_SIZE).float()


def test_uniform_logits_score_log2_vocab_per_token(prepared_cache, tmp_path, monkeypatch):
    record_path = tmp_path / "out" / "result.json"
    monkeypatch.setenv("AUTORESEARCH_RESULT_PATH", str(record_path))
    tokenizer = prepare.Tokenizer.from_directory()
    batch_size = 8
    bpb = prepare.evaluate_bpb(Uniform(), tokenizer, batch_size)

    # The expected score, counted independently from the validation stream and the byte table.
    token_bytes = prepare.get_token_bytes()
    loader = prepare.make_dataloader(tokenizer, batch_size, prepare.MAX_SEQ_LEN, "val")
    tokens = nbytes = 0
    for _ in range(prepare.EVAL_TOKENS // (batch_size * prepare.MAX_SEQ_LEN)):
        _, y, _ = next(loader)
        tokens += int((token_bytes[y] > 0).sum())
        nbytes += int(token_bytes[y].sum())
    expected = math.log2(prepare.VOCAB_SIZE) * tokens / nbytes
    assert bpb == pytest.approx(expected, rel=1e-6)

    record = json.loads(record_path.read_text())
    assert record["val_bpb"] == bpb and (record["tokens"], record["bytes"]) == (tokens, nbytes)
    assert record["prepare_sha256"] == hashlib.sha256((REPO / "prepare.py").read_bytes()).hexdigest()
    assert record["seq_len"] == prepare.MAX_SEQ_LEN and record["device"] == "cpu" and record["eval_seconds"] >= 0


def test_a_model_that_sees_the_future_is_refused(prepared_cache, tmp_path, monkeypatch):
    record_path = tmp_path / "result.json"
    monkeypatch.setenv("AUTORESEARCH_RESULT_PATH", str(record_path))
    tokenizer = prepare.Tokenizer.from_directory()
    with pytest.raises(prepare.CausalityError, match="not causal"):
        prepare.evaluate_bpb(PeeksAhead(), tokenizer, 4)
    assert not record_path.exists()


class PeeksAheadSometimes(torch.nn.Module):
    """Cheats at even positions only, so a single cut shared by all rows would miss it half the time."""

    def forward(self, idx):
        ahead = torch.nn.functional.one_hot(torch.roll(idx, -1, dims=1), prepare.VOCAB_SIZE).float()
        ahead[:, 1::2] = 0
        return ahead


@pytest.mark.slow
def test_a_model_leaking_at_some_positions_is_refused(prepared_cache):
    tokenizer = prepare.Tokenizer.from_directory()
    with pytest.raises(prepare.CausalityError):  # misses only if all 16 rows draw an odd cut: p = 2**-16
        prepare.evaluate_bpb(PeeksAheadSometimes(), tokenizer, 16)


def test_wrong_logits_shape_is_refused(prepared_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("AUTORESEARCH_RESULT_PATH", str(tmp_path / "result.json"))
    tokenizer = prepare.Tokenizer.from_directory()
    with pytest.raises(prepare.EvaluationError, match=rf"shape \(4, {prepare.MAX_SEQ_LEN}, 100\); expected \[B, T, V\]"):
        prepare.evaluate_bpb(Uniform(vocab=100), tokenizer, 4)
    assert not (tmp_path / "result.json").exists()


# --- download --------------------------------------------------------------------------------------------------


class ShardServer(ThreadingHTTPServer):
    """Serves shard files on 127.0.0.1 with HTTP Range support and injectable faults."""

    def __init__(self, files: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), ShardHandler)
        self.files = files
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        self.faults: dict[str, list[str]] = {}  # name -> faults for the next GETs: "garbage", "cut"
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ShardHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output clean
        pass

    def do_HEAD(self):
        self.respond(head=True)

    def do_GET(self):
        self.respond(head=False)

    def respond(self, head: bool):
        name = self.path.rsplit("/", 1)[-1]
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        fault = None
        if not head:
            with self.server.lock:
                self.server.requests.append((name, self.headers.get("Range")))
                pending = self.server.faults.get(name)
                fault = pending.pop(0) if pending else None
        start = 0
        if (rng := self.headers.get("Range")) and not head:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if fault == "garbage":
            body = random.Random(1).randbytes(len(body))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        self.wfile.write(body[: len(body) // 2] if fault == "cut" else body)  # "cut": connection drops halfway


def parquet_bytes(texts: list[str]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"text": texts}), sink)
    return sink.getvalue().to_pybytes()


@pytest.fixture
def shard_server(prepared_cache, monkeypatch):
    texts = read_texts(prepared_cache / "builtin" / "shard_00000.parquet")
    val = read_texts(prepared_cache / "builtin" / sorted(shard_files(prepared_cache / "builtin"))[-1])
    third = len(texts) // 3
    files = {
        "shard_00000.parquet": parquet_bytes(texts[:third]),
        "shard_00001.parquet": parquet_bytes(texts[third:]),
        prepare._shard_name(prepare.CLIMBMIX_VAL_INDEX): parquet_bytes(val),
    }
    server = ShardServer(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AUTORESEARCH_DATA_URL", server.url)
    monkeypatch.setattr(prepare, "DOWNLOAD_BACKOFF_S", 0.01)
    yield server
    server.shutdown()
    server.server_close()


def test_download_verifies_resumes_and_replaces_corrupt_shards(shard_server, tmp_path):
    dataset = prepare.Dataset(tmp_path, "climbmix")
    dataset.dir.mkdir(parents=True)
    # A partial earlier download is continued with a Range request, not restarted.
    original = shard_server.files["shard_00001.parquet"]
    (dataset.dir / "shard_00001.parquet.part").write_bytes(original[:1000])
    # One shard arrives as garbage of the right length, one is cut off halfway: both are retried.
    shard_server.faults = {"shard_00000.parquet": ["garbage"], "shard_06542.parquet": ["cut"]}

    prepare.download_climbmix(dataset, num_shards=2, workers=3)

    assert shard_files(dataset.dir) == shard_server.files
    assert not list(dataset.dir.glob("*.part"))
    seen = shard_server.requests
    assert ("shard_00001.parquet", "bytes=1000-") in seen
    assert [r for n, r in seen if n == "shard_00000.parquet"] == [None, None]  # garbage discarded, fetched anew
    half = len(shard_server.files["shard_06542.parquet"]) // 2
    assert [r for n, r in seen if n == "shard_06542.parquet"] == [None, f"bytes={half}-"]  # resumed after the cut
    manifest = dataset.manifest()
    assert manifest["complete"]
    assert {s["name"]: s["sha256"] for s in manifest["shards"]} == {
        n: hashlib.sha256(b).hexdigest() for n, b in shard_server.files.items()
    }

    # Corrupted on disk later: detected by the manifest and downloaded again; intact shards are left alone.
    damaged = dataset.dir / "shard_00000.parquet"
    damaged.write_bytes(b"x" * damaged.stat().st_size)
    shard_server.requests.clear()
    prepare.download_climbmix(dataset, num_shards=2)
    assert [n for n, _ in shard_server.requests] == ["shard_00000.parquet"]
    assert shard_files(dataset.dir) == shard_server.files


def test_auto_uses_the_shard_server_when_reachable(shard_server, tmp_path):
    dataset_dir = prepare.run_prepare("auto", num_shards=2, cache_dir=tmp_path)
    assert dataset_dir == tmp_path / "climbmix"
    assert prepare.Tokenizer.from_directory(dataset_dir).get_vocab_size() == prepare.VOCAB_SIZE


def test_auto_falls_back_to_builtin_in_one_line(tmp_path, monkeypatch, capsys):
    with socket_closed() as url:
        monkeypatch.setenv("AUTORESEARCH_DATA_URL", url)
        dataset_dir = prepare.run_prepare("auto", builtin_mb=1.5, cache_dir=tmp_path)
    assert dataset_dir == tmp_path / "builtin"
    lines = [line for line in capsys.readouterr().out.splitlines() if "unreachable" in line]
    assert len(lines) == 1 and "builtin" in lines[0] and "127.0.0.1" in lines[0]


class socket_closed:
    """A URL on 127.0.0.1 where nothing listens."""

    def __enter__(self) -> str:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def __exit__(self, *exc):
        self.sock.close()


def test_validation_tokens_are_stored_once_and_a_changed_file_is_refused(prepared_cache, tmp_path):
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(prepared_cache, copy)
    dataset = prepare.Dataset(copy, "builtin")
    entry = dataset.manifest()[dataset.val_key]
    assert entry["count"] > 0 and entry["tokens"]["sha256"] and dataset.val_tokens_problem(full=True) is None
    data = bytearray(dataset.val_tokens_path.read_bytes())
    data[-1] ^= 0xFF  # one token changed, same size
    dataset.val_tokens_path.write_bytes(bytes(data))
    assert "differs from the manifest" in dataset.val_tokens_problem(full=True)
    tokenizer = prepare.Tokenizer.from_directory(copy / "builtin")
    with pytest.raises(prepare.NotPreparedError, match="validation tokens"):
        next(prepare._val_batches(dataset, tokenizer, 2, 16, torch.device("cpu")))
    prepare.run_prepare("builtin", cache_dir=copy)  # prepare repairs it, and only it
    assert dataset.val_tokens_problem(full=True) is None


def test_each_vocabulary_has_its_own_tokenizer_so_one_cache_serves_both_profiles(prepared_cache, tmp_path,
                                                                                  monkeypatch):
    import shutil

    copy = tmp_path / "cache"
    shutil.copytree(prepared_cache, copy)
    here = prepare.data_fingerprint(copy)
    # the other profile (as the GPU one: 8192 tokens, the plain file names) finds no tokenizer of its size ...
    monkeypatch.setattr(prepare, "VOCAB_SIZE", 8192 if prepare.VOCAB_SIZE != 8192 else 2048)
    monkeypatch.setattr(prepare, "VOCAB_FILES", "" if prepare.VOCAB_FILES else "-v2048")
    dataset = prepare.Dataset(copy, "builtin")
    assert any(f"tokenizer of {prepare.VOCAB_SIZE} tokens missing" in p for p in dataset.problems(full=False))
    # ... and the next prepare adds it, leaving the shards and this profile's files as they were
    before = {p.name: p.read_bytes() for p in (copy / "builtin").iterdir() if p.is_file() and p.name != "manifest.json"}
    prepare.run_prepare("builtin", cache_dir=copy)
    assert prepare.Tokenizer.from_directory(copy / "builtin").get_vocab_size() == prepare.VOCAB_SIZE
    assert all((copy / "builtin" / name).read_bytes() == data for name, data in before.items())
    there = prepare.data_fingerprint(copy)
    monkeypatch.undo()
    assert prepare.data_fingerprint(copy) == here  # still prepared, unchanged, for this profile
    assert there["shards"] == here["shards"] and there["data"] != here["data"]
    assert there["vocab_size"] != here["vocab_size"]
