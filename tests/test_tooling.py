"""The tooling a fork of the book gets: the GitHub Actions workflow (which cannot run here, so it is
linted with actionlint and its shape checked), and the pre-commit hooks that run every fixer the
tests ask a maintainer to run (`pre-commit run --all-files`)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"
PRE_COMMIT = ROOT / ".pre-commit-config.yaml"
# The book_tools commands that are not fixers: they need a full run or a translator's call, or
# they only print or build.
NOT_HOOKS = {"execute", "record-live"}
NOT_HOOKS |= {"zh-accept", "setup-cell", "version", "build"}


def workflow() -> dict:
    """The workflow, with its triggers under "on" (YAML 1.1 reads a bare `on` as True)."""
    loaded = yaml.safe_load(WORKFLOW.read_text())
    loaded["on"] = loaded.pop(True, loaded.get("on"))
    return loaded


def run_lines(job: dict) -> list[str]:
    """Every shell line a job runs."""
    return [line.strip() for step in job["steps"] for line in step.get("run", "").splitlines()]


def uses(job: dict) -> list[str]:
    """The actions a job uses, without their versions."""
    return [step["uses"].split("@")[0] for step in job["steps"] if "uses" in step]


def run_tool(*command: str) -> None:
    """Run an installed tool and fail with its output if it fails (skip where it is missing)."""
    if not shutil.which(command[0]):
        pytest.skip(f"{command[0]} is not installed: pip install -r requirements.txt")
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_workflow_passes_actionlint():
    run_tool("actionlint", "-no-color", str(WORKFLOW))


def test_the_workflow_checks_every_push_and_pull_request():
    book = workflow()
    assert {"push", "pull_request"} <= set(book["on"])
    assert book["permissions"] == {"contents": "read"}, "write access only where it deploys"
    check = book["jobs"]["check"]
    lines = run_lines(check)
    assert uses(check) == ["actions/checkout", "actions/setup-python"]
    assert "python -m pip install -r requirements.txt" in lines
    assert any(re.match(r"MNIST_BOOK_QUICK=1 python -m pytest\b", line) for line in lines)


def test_the_workflow_lints_as_ci_does():
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if " -m ruff " in line]
    lines = run_lines(workflow()["jobs"]["check"])
    assert ci, ".ci/run lints with ruff"
    assert [line.replace("python3 ", "python ") for line in ci] == [
        line for line in lines if " -m ruff " in line
    ]


def test_the_workflow_publishes_both_editions_from_main():
    jobs = workflow()["jobs"]
    build, deploy = jobs["build"], jobs["deploy"]
    assert build["needs"] == "check" and deploy["needs"] == "build"
    assert "refs/heads/main" in build["if"] and "push" in build["if"]
    assert "python scripts/book_tools.py build" in run_lines(build)
    assert uses(build)[-1] == "actions/upload-pages-artifact"
    assert build["steps"][-1]["with"]["path"] == "_build/html"
    assert uses(deploy) == ["actions/deploy-pages"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"


def hooks() -> list[dict]:
    """The pre-commit hooks, from every repository in the configuration."""
    return [
        hook for repo in yaml.safe_load(PRE_COMMIT.read_text())["repos"] for hook in repo["hooks"]
    ]


def test_pre_commit_fetches_nothing():
    repos = yaml.safe_load(PRE_COMMIT.read_text())["repos"]
    assert [repo["repo"] for repo in repos] == ["local"], "a remote hook repository is a git clone"
    assert {hook["language"] for hook in hooks()} == {"system"}


def test_pre_commit_runs_every_fixer_the_tests_name():
    named = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        named |= set(re.findall(r"book_tools\.py ([a-z][a-z-]+)", path.read_text()))
    commands = {
        hook["entry"].split("book_tools.py ")[1]
        for hook in hooks()
        if "book_tools" in hook["entry"]
    }
    assert named - NOT_HOOKS <= commands, f"add hooks for {sorted(named - NOT_HOOKS - commands)}"
    assert {"sync-setup-cell", "refresh-sources", "fold-checks", "zh-update"} <= commands
    help_text = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "book_tools.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    subcommands = set(re.search(r"\{([a-z,-]+)\}", help_text).group(1).split(","))
    assert commands <= subcommands, f"not book_tools commands: {sorted(commands - subcommands)}"
    assert {"ruff-check", "ruff-format"} <= {hook["id"] for hook in hooks()}


def test_pre_commit_reads_its_configuration():
    run_tool("pre-commit", "validate-config", str(PRE_COMMIT))
