"""Side-by-side timing: every variant once per round, in turn, after one untimed round."""

from __future__ import annotations

from helpers import bench, timing


def test_variants_take_turns_so_a_busy_moment_slows_them_alike():
    calls: list[str] = []

    def variant(name: str):
        return lambda: calls.append(name) or {"name": name}

    results = timing.side_by_side({"a": variant("a"), "b": variant("b")}, repeats=2)
    assert calls == ["a", "b"] * 3, "a warm-up round, then two rounds, each variant in turn"
    assert results == {"a": [{"name": "a"}] * 2, "b": [{"name": "b"}] * 2}
    timing.side_by_side({"a": variant("a")}, repeats=1, warmup=False)
    assert calls[-1:] == ["a"] and len(calls) == 7


def test_the_benchmark_and_chapter_11_use_the_same_function():
    assert bench.side_by_side is timing.side_by_side
