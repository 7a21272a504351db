"""agents.record.gitops round trips in throwaway repositories."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from agents.record.gitops import ExperimentRepo, GitError

TRAIN = "DEPTH = 4\nMATRIX_LR = 0.04\n\n\ndef main():\n    pass\n\n\nWARMUP = 0.0\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture(autouse=True)
def no_global_git_config(tmp_path, monkeypatch):
    """An empty HOME: no global identity, so the repository-local fallback is exercised."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return home


@pytest.fixture
def repo_dir(tmp_path) -> Path:
    path = tmp_path / "proj"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "train.py").write_text(TRAIN)
    (path / "program.md").write_text("# program\n")
    git(path, "add", ".")
    git(path, "-c", "user.name=setup", "-c", "user.email=setup@example.invalid", "commit", "-q", "-m", "init")
    return path


def test_not_a_repository(tmp_path):
    with pytest.raises(GitError, match=f"not a git repository: {tmp_path}"):
        ExperimentRepo(tmp_path).ensure_git_repo()


def test_branch_commit_reset_and_refs_keep_discarded_work(repo_dir, no_global_git_config):
    repo = ExperimentRepo(repo_dir).ensure_git_repo()
    assert repo.start_branch("t1") == "autoresearch/t1"
    assert git(repo_dir, "branch", "--show-current").strip() == "autoresearch/t1"
    parent = repo.head()

    # the user's unrelated work: a staged file and an edited file, neither may be committed or lost
    (repo_dir / "notes.txt").write_text("mine\n")
    git(repo_dir, "add", "notes.txt")
    (repo_dir / "program.md").write_text("# program\nedited by the user\n")

    (repo_dir / "train.py").write_text(TRAIN.replace("DEPTH = 4", "DEPTH = 6"))
    sha = repo.commit_file("train.py", "exp001: depth 6")
    assert sha == repo.head() != parent
    assert git(repo_dir, "show", "--name-only", "--format=", sha).split() == ["train.py"]
    assert git(repo_dir, "log", "-1", "--format=%an <%ae>").strip() == "autoresearch <autoresearch@localhost>"
    assert not (no_global_git_config / ".gitconfig").exists()  # global config untouched
    assert "A  notes.txt" in git(repo_dir, "status", "--porcelain")

    diff = repo.diff(parent, sha)
    assert "-DEPTH = 4\n+DEPTH = 6\n" in diff and diff.endswith("\n")

    assert repo.keep_ref("t1", "exp001", sha) == "refs/autoresearch/t1/exp001"
    repo.reset_hard(parent)
    assert repo.head() == parent
    assert (repo_dir / "train.py").read_text() == TRAIN
    assert (repo_dir / "program.md").read_text().endswith("edited by the user\n")
    assert (repo_dir / "notes.txt").read_text() == "mine\n"

    # the discarded commit survives garbage collection through its ref
    git(repo_dir, "reflog", "expire", "--expire=now", "--all")
    git(repo_dir, "gc", "-q", "--prune=now")
    assert repo.list_refs("t1") == {"exp001": sha}
    assert repo.read_file_at(sha, "train.py") == TRAIN.replace("DEPTH = 4", "DEPTH = 6")
    assert repo.read_file_at(parent, "train.py") == TRAIN
    with pytest.raises(GitError, match="nope.py does not exist"):
        repo.read_file_at(sha, "nope.py")


def test_reset_discards_uncommitted_train_py_of_the_loop(repo_dir):
    repo = ExperimentRepo(repo_dir)
    repo.start_branch("t2")
    (repo_dir / "train.py").write_text("half-written edit\n")
    repo.reset_hard(repo.head())
    assert (repo_dir / "train.py").read_text() == TRAIN
    (repo_dir / "train.py").write_text("another half-written edit\n")
    git(repo_dir, "add", "train.py")
    repo.restore_file("train.py")
    assert (repo_dir / "train.py").read_text() == TRAIN
    repo.ensure_clean()
    with pytest.raises(GitError, match="nope.py does not exist at HEAD"):
        repo.restore_file("nope.py")


def test_reset_refuses_to_overwrite_local_edits(repo_dir):
    repo = ExperimentRepo(repo_dir)
    start = repo.head()
    (repo_dir / "program.md").write_text("# program v2\n")
    git(repo_dir, "-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-qam", "v2")
    (repo_dir / "program.md").write_text("# program v3, not committed\n")
    with pytest.raises(GitError, match="program.md"):
        repo.reset_hard(start)
    assert (repo_dir / "program.md").read_text() == "# program v3, not committed\n"


def test_existing_branch_is_checked_out(repo_dir):
    repo = ExperimentRepo(repo_dir)
    repo.start_branch("t3")
    (repo_dir / "train.py").write_text(TRAIN + "# x\n")
    sha = repo.commit_file("train.py", "exp")
    git(repo_dir, "checkout", "-q", "main")
    assert repo.start_branch("t3") == "autoresearch/t3"
    assert repo.head() == sha


def test_dirty_or_uncommitted_train_py_is_refused(repo_dir, tmp_path):
    repo = ExperimentRepo(repo_dir)
    repo.ensure_clean()
    (repo_dir / "train.py").write_text(TRAIN + "# my own tweak\n")
    with pytest.raises(GitError, match="train.py has uncommitted changes"):
        repo.ensure_clean(["train.py"])
    with pytest.raises(GitError, match="train.py has uncommitted changes"):
        repo.start_branch("t4")
    assert (repo_dir / "train.py").read_text().endswith("# my own tweak\n")  # untouched

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    (fresh / "train.py").write_text(TRAIN)
    with pytest.raises(GitError, match="no commits yet"):
        ExperimentRepo(fresh).ensure_clean()
    (fresh / "x").write_text("x")
    git(fresh, "add", "x")
    git(fresh, "-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-qm", "x")
    with pytest.raises(GitError, match="train.py is not committed yet"):
        ExperimentRepo(fresh).ensure_clean()


def test_nothing_to_commit_and_bad_names(repo_dir):
    repo = ExperimentRepo(repo_dir)
    with pytest.raises(GitError, match="nothing to commit: train.py is unchanged"):
        repo.commit_file("train.py", "empty")
    with pytest.raises(GitError, match="tag 'bad..tag' does not make a valid git ref name"):
        repo.start_branch("bad..tag")
    with pytest.raises(GitError, match="unknown revision: deadbeef"):
        repo.reset_hard("deadbeef")


def test_worktree_add_commit_remove(repo_dir, tmp_path):
    repo = ExperimentRepo(repo_dir)
    repo.start_branch("t5")
    base = repo.head()
    wt_dir = tmp_path / "wt1"
    worker_path = repo.add_worktree(wt_dir, "autoresearch/t5-w1", base)
    assert worker_path == wt_dir.resolve()
    assert (worker_path / "train.py").read_text() == TRAIN

    worker = ExperimentRepo(worker_path)
    (worker_path / "train.py").write_text(TRAIN.replace("0.04", "0.03"))
    worker_sha = worker.commit_file("train.py", "worker exp")
    assert git(repo_dir, "rev-parse", "autoresearch/t5-w1").strip() == worker_sha
    assert repo.head() == base  # the main checkout did not move

    repo.remove_worktree(wt_dir)
    assert not wt_dir.exists()
    assert str(wt_dir.resolve()) not in git(repo_dir, "worktree", "list")
    assert repo.read_file_at(worker_sha, "train.py") == TRAIN.replace("0.04", "0.03")

    # the worker branch holds a commit that `base` lacks: re-adding it at `base` would orphan it
    with pytest.raises(GitError, match="not an ancestor"):
        repo.add_worktree(tmp_path / "wt2", "autoresearch/t5-w1", base)
    # moving it forward is fine
    assert (repo.add_worktree(tmp_path / "wt3", "autoresearch/t5-w1", worker_sha) / "train.py").exists()

    detached = repo.add_worktree(tmp_path / "wt4", None, base)
    shutil.rmtree(detached)
    repo.prune_worktrees()
    assert str(detached) not in git(repo_dir, "worktree", "list")


def test_project_in_a_subdirectory(tmp_path):
    root = tmp_path / "mono"
    (root / "sub").mkdir(parents=True)
    git(root, "init", "-q")
    (root / "sub" / "train.py").write_text(TRAIN)
    git(root, "add", ".")
    git(root, "-c", "user.name=u", "-c", "user.email=u@example.invalid", "commit", "-qm", "init")
    repo = ExperimentRepo(root / "sub")
    parent = repo.head()
    (root / "sub" / "train.py").write_text(TRAIN + "# sub\n")
    sha = repo.commit_file("train.py", "exp")
    assert git(root, "show", "--name-only", "--format=", sha).split() == ["sub/train.py"]
    assert "+# sub" in repo.diff(parent, sha)
    assert (repo.add_worktree(tmp_path / "wt", None, sha) / "train.py").read_text().endswith("# sub\n")


BASE = "A = 1\nB = 2\n\n\nC = 3\nD = 4\n\n\nE = 5\n"


def test_merge_file_clean():
    ours = BASE.replace("A = 1", "A = 10")
    theirs = BASE.replace("E = 5", "E = 50")
    merged = ExperimentRepo("/nonexistent").merge_file(BASE, ours, theirs)
    assert merged == BASE.replace("A = 1", "A = 10").replace("E = 5", "E = 50")


def test_merge_file_conflict_is_none():
    ours = BASE.replace("C = 3", "C = 30")
    theirs = BASE.replace("C = 3", "C = 31")
    assert ExperimentRepo("/nonexistent").merge_file(BASE, ours, theirs) is None
