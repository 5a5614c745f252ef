"""CI's steps as named sessions (`nox -l` lists them; `nox` runs them all, as `bash .ci/run` does).

They run in the Python that has the book's requirements, not in environments of their own (nothing
is installed per session): `nox -s lint`, `nox -s tests`, `nox -s git_install`...
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "none"
nox.options.sessions = ["lint", "tests", "portable", "git_install"]
nox.options.error_on_external_run = False


@nox.session
def install(session: nox.Session) -> None:
    """Install what the book needs (CI does this first)."""
    session.run("python3", "-m", "pip", "install", "--quiet", "-r", "requirements.txt")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, as CI runs it."""
    session.run("python3", "-m", "ruff", "check", ".")
    session.run("python3", "-m", "ruff", "format", "--check", "helpers", "tests", "scripts")


@nox.session
def tests(session: nox.Session) -> None:
    """The unit tests and every chapter under nbval, in quick mode (arguments go to pytest)."""
    session.env["MNIST_BOOK_QUICK"] = "1"
    session.run("python3", "-m", "pytest", "-q", "--durations=10", *session.posargs)


@nox.session
def portable(session: nox.Session) -> None:
    """The book as another machine would run it (.ci/portable; arguments: chapters)."""
    session.run("bash", ".ci/portable", *session.posargs)


@nox.session
def git_install(session: nox.Session) -> None:
    """The Colab install path from HEAD (.ci/git-install; `-- --worktree` for the working tree)."""
    session.run("bash", ".ci/git-install", *session.posargs)


@nox.session
def fix(session: nox.Session) -> None:
    """Every fixer the tests ask a maintainer to run (.pre-commit-config.yaml)."""
    session.run("pre-commit", "run", "--all-files")
