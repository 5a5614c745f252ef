"""scripts/git_install.py, the Colab path's check (`bash .ci/git-install`, which CI runs in full):
its parts, quickly, on small inputs."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import git_install  # noqa: E402
from git_install import StepFailed, Steps  # noqa: E402


def test_the_closure_follows_requirements_and_skips_what_is_missing(capsys):
    found = git_install.requirement_closure(["pytest", "no-such-distribution-here"])
    assert {"pytest", "pluggy", "iniconfig", "packaging"} <= set(found)
    assert "not installed, pip may fetch it: no-such-distribution-here" in capsys.readouterr().out
    assert "torch" not in found, "only what pytest needs"


def test_linked_distributions_import_and_carry_their_metadata(tmp_path):
    git_install.link_distributions(git_install.requirement_closure(["pytest"]).values(), tmp_path)
    probe = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "import importlib.metadata as m, pytest; print(m.version('pytest'), pytest.__file__)"
    )
    out = subprocess.run(  # -S: no site-packages, only the linked folder
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[0] == md.version("pytest")
    assert out[1].startswith(str(tmp_path))


def test_set_version_changes_one_line_in_each_file_or_says_which(tmp_path):
    (tmp_path / "helpers").mkdir()
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "0.4.0"\ntarget-version = "x"\n')
    (tmp_path / "helpers" / "__init__.py").write_text('"""doc"""\n__version__ = "0.4.0"\n')
    git_install.set_version(tmp_path, "0.4.0", "0.0.1")
    assert 'version = "0.0.1"' in (tmp_path / "pyproject.toml").read_text()
    assert (tmp_path / "helpers" / "__init__.py").read_text().endswith('__version__ = "0.0.1"\n')
    with pytest.raises(StepFailed, match='pyproject.toml: expected one line version = "0.4.0"'):
        git_install.set_version(tmp_path, "0.4.0", "0.0.1")


def test_export_takes_head_or_the_working_tree(tmp_path):
    repo, head, tree = tmp_path / "repo", tmp_path / "head", tmp_path / "tree"
    repo.mkdir()
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "committed.txt").write_text("committed")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "-c", "commit.gpgsign=false", "commit", "-qm", "one"], check=True)
    (repo / "committed.txt").write_text("changed")
    (repo / "new.txt").write_text("new")
    (repo / "ignored.txt").write_text("ignored")
    git_install.export_source(repo, head, worktree=False)
    git_install.export_source(repo, tree, worktree=True)
    assert (head / "committed.txt").read_text() == "committed"
    assert not (head / "new.txt").exists()
    assert (tree / "committed.txt").read_text() == "changed"
    assert (tree / "new.txt").exists() and not (tree / "ignored.txt").exists()


def test_the_setup_cell_installs_from_the_address_given():
    cell, nowhere = git_install.setup_cells(ROOT, "git+file:///tmp/book.git", "git+file:///x")
    assert '"git+file:///tmp/book.git@v" + VERSION' in cell
    assert '"git+file:///x@v" + VERSION' in nowhere
    assert "github.com" not in cell and "import helpers" in cell


def test_steps_record_pass_and_fail_and_show_a_failures_log(tmp_path, capsys):
    steps = Steps(tmp_path / "log")

    def fails() -> None:
        print("what went wrong")
        raise StepFailed("a check did not hold")

    assert steps("passes", lambda: print("quiet"))
    assert not steps("fails", fails)
    assert steps.summary("head, v0.4.0", 1.0) == 1
    out = capsys.readouterr().out
    assert "== passes" in out and "quiet" not in out
    assert "   | what went wrong\n   | a check did not hold" in out
    assert [line.split()[:2] for line in steps.results] == [["PASS", "passes"], ["FAIL", "fails"]]
    assert out.rstrip().endswith("FAIL: git-install, 1 s")


def test_every_step_of_the_colab_path_is_there():
    names = [name for name, *_ in git_install.STEPS]
    expected = ["export", "bare repository", "fresh venv", "installs", "installed:", "chapter 01"]
    for words in [*expected, "refuses a reader's own helpers.py", "replaces helpers"]:
        assert any(words in name for name in names), words
    needed = [name for name, _, needed, _ in git_install.STEPS if needed]
    assert needed == names[: len(needed)], "the steps that later ones need come first"


def test_the_fresh_check_fails_where_helpers_is_importable(tmp_path):
    done = subprocess.run(
        [sys.executable, str(git_install.CHECKS), "fresh"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "helpers is importable before the install" in done.stderr
