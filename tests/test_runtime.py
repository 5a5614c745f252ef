"""The setup cell's decisions: threads, device, quick mode."""

from __future__ import annotations

import pytest
import torch

from helpers import runtime


@pytest.mark.parametrize(("cores", "threads"), [(1, 1), (2, 1), (4, 3), (16, 8), (64, 8)])
def test_book_threads_leaves_a_core_free_and_stays_small(cores, threads, monkeypatch):
    monkeypatch.delenv(runtime.THREADS_ENV_VAR, raising=False)
    assert runtime.book_threads(cores) == threads


def test_book_threads_obeys_the_environment(monkeypatch):
    monkeypatch.setenv(runtime.THREADS_ENV_VAR, "3")
    assert runtime.book_threads(cores=2) == 3
    monkeypatch.setenv(runtime.THREADS_ENV_VAR, "zero")
    with pytest.raises(ValueError, match="MNIST_BOOK_THREADS='zero'"):
        runtime.book_threads()


def test_setup_sets_the_thread_count_once(monkeypatch, capsys):
    before = torch.get_num_threads()
    monkeypatch.setenv(runtime.THREADS_ENV_VAR, "1")
    try:
        assert runtime.setup().type in ("cpu", "cuda", "mps")
        assert torch.get_num_threads() == 1
        runtime.setup(threads=2)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert capsys.readouterr().out.startswith("Device: ")


def test_available_cores_is_at_least_one():
    assert 1 <= runtime.available_cores() <= (__import__("os").cpu_count() or 1)


def test_expect_error_prints_the_error_as_python_would_and_goes_on(capsys):
    with runtime.expect_error(ValueError):
        int("seven")
    assert capsys.readouterr().out == (
        "ValueError: invalid literal for int() with base 10: 'seven'\n"
    )


def test_expect_error_fails_when_nothing_or_something_else_is_raised():
    nothing = "expected ValueError or KeyError, but the code ran"
    with pytest.raises(AssertionError, match=nothing), runtime.expect_error(ValueError, KeyError):
        pass
    with pytest.raises(ZeroDivisionError), runtime.expect_error(ValueError):
        1 / 0  # noqa: B018 - not the error the lesson is about: it stops the run, as it should
