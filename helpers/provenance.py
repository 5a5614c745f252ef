"""What made a result: the recipe, a hash of the code that trained it, and the versions.

A cached result or a shipped checkpoint is only as good as the code that made it. `code_hash`
hashes the source of a loop's entry points and of everything in `helpers` they call, followed
name by name (docstrings, comments and formatting left out, so improving those costs nothing).
`stamp` records that hash with the torch and helpers versions; a cache compares the stamp of a
stored result with the current one and trains again when the code no longer matches.
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator

import torch

PRIMITIVES = (int, float, str, bool, type(None))

# Where the hash stops following calls: code whose output is pinned by other means. The MNIST
# files `ensure_mnist` returns are verified against fixed checksums, however they were fetched.
BOUNDARIES = {"helpers.data.ensure_mnist"}


def normalized_source(obj: object) -> str:
    """`obj`'s source as the code it is: docstrings, comments and layout removed."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(obj)))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module)
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


def _namespace(obj: object) -> dict:
    """The global names `obj`'s code sees."""
    return getattr(obj, "__globals__", None) or vars(sys.modules[obj.__module__])


def bookkeeping(fn: Callable) -> Callable:
    """Mark `fn` as bookkeeping (it computes or records a hash): `code_hash` does not follow it."""
    fn.__provenance_skip__ = True
    return fn


def _is_ours(value: object) -> bool:
    """A function or class of the `helpers` package (this module and bookkeeping excepted)."""
    is_code = isinstance(value, types.FunctionType | type)
    module = getattr(value, "__module__", "")
    skip = getattr(value, "__provenance_skip__", False)
    return is_code and module.startswith("helpers.") and module != __name__ and not skip


def _is_plain(value: object) -> bool:
    """A number, string, None, or a tuple of them: a constant whose repr is its value."""
    if isinstance(value, tuple):
        return all(_is_plain(v) for v in value)
    return isinstance(value, PRIMITIVES)


def _references(obj: object) -> Iterator[tuple[str, object]]:
    """The helpers functions, classes and constants `obj`'s source names (`f`, `module.f`)."""
    names = _namespace(obj)
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(obj)))):
        value, label = None, None
        if isinstance(node, ast.Name) and node.id in names:
            value, label = names[node.id], f"{obj.__module__}.{node.id}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = names.get(node.value.id)
            if isinstance(module, types.ModuleType) and module.__name__.startswith("helpers."):
                value = getattr(module, node.attr, None)
                label = f"{module.__name__}.{node.attr}"
        if value is None:
            continue
        if _is_ours(value) or (_is_plain(value) and label.split(".")[-1].isupper()):
            yield label, value


def code_hash(*entry_points: Callable | type) -> str:
    """A short hash of the entry points' code and of every helpers function, class and constant
    they reach by name: change any of it and the hash changes."""
    seen: dict[str, str] = {}
    todo = [(f"{obj.__module__}.{obj.__qualname__}", obj) for obj in entry_points]
    while todo:
        label, obj = todo.pop()
        if label in seen:
            continue
        if _is_plain(obj):
            seen[label] = repr(obj)
            continue
        seen[label] = normalized_source(obj)
        if f"{obj.__module__}.{obj.__qualname__}" not in BOUNDARIES:
            todo.extend(_references(obj))
    text = "\n".join(f"# {label}\n{seen[label]}" for label in sorted(seen))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stamp(code: str) -> dict[str, str]:
    """The record a result keeps of what made it: the code hash and the versions in use."""
    from helpers import __version__

    return {"code": code, "torch": str(torch.__version__), "helpers": __version__}
