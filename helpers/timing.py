"""Timing that a busy machine cannot bias: variants run side by side, in turn (chapter 11).

Chapter 11 times training epochs this way and chapter 12 single predictions; neither needs the
rest of the benchmark (`helpers.bench`) to do it.
"""

from __future__ import annotations

from collections.abc import Callable


def side_by_side(
    fns: dict[str, Callable[[], dict]], repeats: int, warmup: bool = True
) -> dict[str, list[dict]]:
    """Run every function once per repetition, in turn, after one untimed round; all results."""
    if warmup:
        for fn in fns.values():
            fn()
    results: dict[str, list[dict]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            results[name].append(fn())
    return results
