"""Git for experiments: a branch per run, one commit per experiment, refs that keep discarded work.

Commits touch only train.py. A discarded or crashed experiment's commit is kept reachable under
`refs/autoresearch/<tag>/<exp_id>` before the branch is reset, so nothing tried is ever lost.
The user's own uncommitted work is never overwritten: dirty train.py is refused, and resets keep
unrelated local changes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import git

BRANCH_PREFIX = "autoresearch/"
REF_PREFIX = "refs/autoresearch/"
DEFAULT_IDENTITY = ("autoresearch", "autoresearch@localhost")


class GitError(RuntimeError):
    """A git operation that cannot be done safely; the message names the file or ref concerned."""


class _Git(git.Git):
    """git commands (the long-lived `git cat-file` readers too) in a process group of their own: a Ctrl-C at the
    terminal reaches the whole foreground group, and the loop, not the signal, decides what stops under it."""

    def execute(self, command, *args, **kwargs):  # type: ignore[override]
        kwargs.setdefault("process_group", 0)
        return super().execute(command, *args, **kwargs)


class _Repo(git.Repo):
    GitCommandWrapperType = _Git


class ExperimentRepo:
    """The git repository holding train.py. Paths given to methods are relative to `path`."""

    def __init__(self, path: Path | str, managed: tuple[str, ...] = ("train.py",)):
        self.path = Path(path).resolve()
        self.managed = managed  # files the loop owns while it runs
        self._repo: git.Repo | None = None

    # setup

    @property
    def repo(self) -> git.Repo:
        if self._repo is None:
            self.ensure_git_repo()
        assert self._repo is not None
        return self._repo

    def ensure_git_repo(self) -> ExperimentRepo:
        """Open the repository containing `path`, or raise GitError("not a git repository: ...")."""
        if self._repo is not None:
            return self
        try:
            repo = _Repo(self.path, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise GitError(f"not a git repository: {self.path}") from None
        if repo.bare or repo.working_tree_dir is None:
            raise GitError(f"not a git repository with a working tree: {self.path}")
        self._repo = repo
        self._prefix = self.path.relative_to(Path(repo.working_tree_dir).resolve())
        return self

    def _rel(self, path: str | Path) -> str:
        """`path` (relative to self.path) as git names it (relative to the top of the work tree)."""
        self.ensure_git_repo()
        return (self._prefix / path).as_posix()

    def _git(self, *args: str, **kwargs) -> str:
        try:
            return self.repo.git.execute([git.Git.GIT_PYTHON_GIT_EXECUTABLE, *args], **kwargs)
        except git.GitCommandError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().replace("\n", " ")
            raise GitError(f"git {' '.join(args[:2])} failed: {detail}") from None

    def ensure_identity(self) -> None:
        """Give this repository a committer identity when none is configured anywhere (global untouched)."""
        reader = self.repo.config_reader()
        if reader.has_option("user", "name") and reader.has_option("user", "email"):
            return
        with self.repo.config_writer("repository") as writer:
            if not reader.has_option("user", "name"):
                writer.set_value("user", "name", DEFAULT_IDENTITY[0])
            if not reader.has_option("user", "email"):
                writer.set_value("user", "email", DEFAULT_IDENTITY[1])

    def ensure_clean(self, paths: list[str] | None = None) -> None:
        """Refuse to go on while any of `paths` has uncommitted (or untracked) changes."""
        if not self.repo.head.is_valid():
            raise GitError("the repository has no commits yet; commit train.py first")
        for path in paths or list(self.managed):
            status = self._git("status", "--porcelain", "--untracked-files=all", "--", self._rel(path))
            if status.startswith("??"):
                raise GitError(f"{path} is not committed yet; commit it first so the experiments start from it")
            if status.strip():
                raise GitError(
                    f"{path} has uncommitted changes; commit or stash them first so they are not overwritten"
                )

    # branch and commits

    def start_branch(self, tag: str) -> str:
        """Check out `autoresearch/<tag>`, creating it from HEAD if needed; returns the branch name."""
        branch = BRANCH_PREFIX + tag
        self._check_ref_name(f"refs/heads/{branch}", f"tag {tag!r}")
        self.ensure_clean()
        if branch in self.repo.heads:
            self._git("checkout", branch)
        else:
            self._git("checkout", "-b", branch)
        return branch

    def head(self) -> str:
        """The full sha of HEAD."""
        return self.repo.head.commit.hexsha

    def commit_file(self, path: str, message: str) -> str:
        """Commit the current content of `path` alone (other staged changes stay staged); returns the sha."""
        self.ensure_identity()
        rel = self._rel(path)
        if not self._git("status", "--porcelain", "--", rel).strip():
            raise GitError(f"nothing to commit: {path} is unchanged since HEAD")
        self._git("add", "--", rel)
        # --only commits just this path; no hooks or signing prompts in an unattended loop
        self._git("commit", "--only", "--no-verify", "--no-gpg-sign", "-m", message, "--", rel)
        return self.head()

    def commit_text(self, path: str, text: str, parent: str, message: str) -> str:
        """A commit of `parent` with `path` replaced by `text`, made without touching the index or working tree.

        Several experiments can be committed on different bases while the checked-out branch stays where it
        is; the new commit is reachable from no branch until a ref points at it (see `keep_ref`).
        """
        self.ensure_identity()
        rel = self._rel(path)
        parent = self._resolve(parent)
        entry = self._git("ls-tree", parent, "--", rel)
        mode = entry.split(" ", 1)[0] if entry else "100644"
        with tempfile.TemporaryDirectory(prefix="autoresearch-commit-") as tmp:
            source = Path(tmp) / "file"
            source.write_text(text, encoding="utf-8", newline="")
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}  # a private index: the user's stays as it is
            self._git("read-tree", parent, env=env)
            blob = self._git("hash-object", "-w", "--", str(source))
            self._git("update-index", "--add", "--cacheinfo", f"{mode},{blob},{rel}", env=env)
            tree = self._git("write-tree", env=env)
        # no hooks or signing prompts in an unattended loop
        return self._git("commit-tree", "--no-gpg-sign", tree, "-p", parent, "-m", message)

    def reset_hard(self, sha: str) -> None:
        """Move the branch to `sha` and make the managed files (train.py) match it.

        Unlike a bare `git reset --hard`, unrelated uncommitted changes (say, notes in program.md) are
        kept: the managed files are first restored to HEAD (the loop owns them), then `git reset --keep`
        moves the branch and refuses, with an error naming the file, rather than overwrite local edits.
        """
        tracked = [self._rel(p) for p in self.managed if self._tracked_at("HEAD", self._rel(p))]
        if tracked:
            self._git("checkout", "HEAD", "--", *tracked)
        self._git("reset", "--keep", self._resolve(sha))

    def restore_file(self, path: str, rev: str = "HEAD") -> None:
        """Put `path` back to its content at `rev`, in the index and on disk (undoes the loop's own edit)."""
        rel = self._rel(path)
        if not self._tracked_at(rev, rel):
            raise GitError(f"{path} does not exist at {rev}")
        self._git("checkout", self._resolve(rev), "--", rel)

    # refs for discarded work

    def keep_ref(self, tag: str, exp_id: str, sha: str) -> str:
        """Point `refs/autoresearch/<tag>/<exp_id>` at `sha` so it stays reachable; returns the ref name."""
        ref = f"{REF_PREFIX}{tag}/{exp_id}"
        self._check_ref_name(ref, f"tag {tag!r} / experiment id {exp_id!r}")
        self._git("update-ref", ref, self._resolve(sha))
        return ref

    def list_refs(self, tag: str) -> dict[str, str]:
        """{exp_id: sha} of the refs kept for `tag`, sorted by experiment id."""
        out = self._git("for-each-ref", "--format=%(refname) %(objectname)", f"{REF_PREFIX}{tag}/")
        prefix = f"{REF_PREFIX}{tag}/"
        refs = {}
        for line in out.splitlines():
            name, sha = line.split(" ", 1)
            refs[name[len(prefix) :]] = sha
        return dict(sorted(refs.items()))

    # reading

    def diff(self, a: str, b: str, path: str = "train.py") -> str:
        """`git diff a b -- path` (empty when equal)."""
        return self._git("diff", self._resolve(a), self._resolve(b), "--", self._rel(path), strip_newline_in_stdout=False)

    def read_file_at(self, sha: str, path: str) -> str:
        """The exact text of `path` at commit `sha`."""
        rel = self._rel(path)
        try:
            blob = self.repo.commit(self._resolve(sha)).tree / rel
        except KeyError:
            raise GitError(f"{path} does not exist at {sha[:12]}") from None
        return blob.data_stream.read().decode("utf-8")

    # worktrees for parallel workers

    def add_worktree(self, directory: Path | str, branch: str | None, start_point: str = "HEAD") -> Path:
        """A new worktree at `directory` on `branch` (None: detached) starting at `start_point`.

        An existing branch is only moved forward (when its tip is an ancestor of `start_point`), so no
        commit is orphaned. Returns the counterpart of `path` inside the worktree.
        """
        directory = Path(directory).resolve()
        target = self._resolve(start_point)
        if branch is None:
            self._git("worktree", "add", "--detach", str(directory), target)
        else:
            self._check_ref_name(f"refs/heads/{branch}", f"branch {branch!r}")
            if branch in self.repo.heads:
                tip = self.repo.heads[branch].commit.hexsha
                if not self.repo.is_ancestor(tip, target):
                    raise GitError(
                        f"branch {branch} exists at {tip[:12]}, which is not an ancestor of {start_point}; "
                        "refusing to move it"
                    )
                self._git("worktree", "add", "-B", branch, str(directory), target)
            else:
                self._git("worktree", "add", "-b", branch, str(directory), target)
        return directory / self._prefix

    def remove_worktree(self, directory: Path | str) -> None:
        """Remove a worktree made by `add_worktree`, local edits included (its commits stay in git)."""
        self._git("worktree", "remove", "--force", str(Path(directory).resolve()))

    def prune_worktrees(self) -> None:
        """Forget worktrees whose directories were deleted."""
        self._git("worktree", "prune")

    def merge_file(self, base: str, ours: str, theirs: str) -> str | None:
        """Three-way merge of train.py texts (`git merge-file -p`); None when they conflict."""
        with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as tmp:
            files = []
            for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
                file = Path(tmp) / name
                file.write_text(text, encoding="utf-8", newline="")
                files.append(str(file))
            status, out, err = _Git(tmp).execute(
                [git.Git.GIT_PYTHON_GIT_EXECUTABLE, "merge-file", "-p", *files],
                with_extended_output=True,
                with_exceptions=False,
                strip_newline_in_stdout=False,
            )
        if status == 0:
            return out
        if 0 < status < 128:  # the number of conflicts
            return None
        raise GitError(f"git merge-file failed: {err.strip()}")

    # helpers

    def _resolve(self, rev: str) -> str:
        try:
            return self.repo.rev_parse(rev).hexsha
        except (git.BadName, git.BadObject, ValueError):
            raise GitError(f"unknown revision: {rev}") from None

    def _tracked_at(self, rev: str, rel: str) -> bool:
        try:
            self.repo.commit(rev).tree / rel
            return True
        except KeyError:
            return False

    def _check_ref_name(self, ref: str, what: str) -> None:
        status, _, _ = self.repo.git.execute(
            [git.Git.GIT_PYTHON_GIT_EXECUTABLE, "check-ref-format", ref], with_extended_output=True, with_exceptions=False
        )
        if status != 0:
            raise GitError(f"{what} does not make a valid git ref name ({ref})")
