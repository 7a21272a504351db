"""A new project starts from the committed starting files, never from working copies a run or a user edited."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from agents.config import PRESETS, PRESETS_DIR, PROJECT_TEMPLATE_DIR
from agents.project import PROJECT_FILES

ROOT = Path(__file__).resolve().parent.parent
GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", "-c", "init.defaultBranch=main"]


def test_shipped_project_files_are_the_repositorys_starting_files():
    shipped = [*PROJECT_FILES, *(f"presets/{p.name}" for p in sorted((ROOT / "presets").glob("*.yaml")))]
    differ = [name for name in shipped
              if not (PROJECT_TEMPLATE_DIR / name).is_file()
              or (PROJECT_TEMPLATE_DIR / name).read_bytes() != (ROOT / name).read_bytes()]
    assert not differ, (
        f"agents/project/ ships what `autoresearch init` starts from and must equal the repository's starting files; "
        f"{', '.join(differ)} differ. After changing one on the default branch, copy it: "
        + "; ".join(f"cp {name} agents/project/{name}" for name in differ))


def test_the_template_holds_files_not_links_to_working_copies():
    assert [p for p in PROJECT_TEMPLATE_DIR.rglob("*") if p.is_symlink()] == []
    assert sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")) == sorted(PRESETS)
    assert sorted(p.stem for p in (ROOT / "presets").glob("*.yaml")) == sorted(PRESETS)


@pytest.mark.slow
def test_a_wheel_built_on_an_experiment_branch_ships_the_starting_files(tmp_path):
    """The checkout sits on an experiment branch whose train.py the crew changed, with a steered program.md not
    yet committed: the sdist, and the wheel built from it, still carry the starting files."""
    source = tmp_path / "checkout"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(GIT + ["init", "-q"], cwd=source, check=True)
    subprocess.run(GIT + ["add", "-A"], cwd=source, check=True)
    subprocess.run(GIT + ["commit", "-qm", "starting point"], cwd=source, check=True)
    subprocess.run(GIT + ["checkout", "-qb", "autoresearch/night"], cwd=source, check=True)
    train = source / "train.py"
    edited = train.read_text().replace("NS_STEPS = 5", "NS_STEPS = 6")
    assert edited != train.read_text()
    train.write_text(edited)
    subprocess.run(GIT + ["commit", "-qam", "exp3: NS_STEPS 5 -> 6"], cwd=source, check=True)
    (source / "program.md").write_text("Only ever try bigger models.\n")

    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name: archive.read(f"agents/project/{name}") for name in PROJECT_FILES}
        presets = {Path(n).stem for n in archive.namelist() if n.startswith("agents/project/presets/")}
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        in_sdist = {name: archive.extractfile(f"{top}/agents/project/{name}").read() for name in PROJECT_FILES}
    for name in PROJECT_FILES:
        assert shipped[name] == in_sdist[name] == (PROJECT_TEMPLATE_DIR / name).read_bytes(), name
    assert b"NS_STEPS = 5" in shipped["train.py"] and b"NS_STEPS = 6" not in shipped["train.py"]
    assert b"bigger models" not in shipped["program.md"]
    assert presets == set(PRESETS)
