"""The sandbox of ``source.derive``: which expressions a spec may give, and which columns one reads.

An expression is evaluated by pandas (``DataFrame.eval``) on each chunk read; the spec only accepts
arithmetic, comparisons, boolean logic and method calls on columns, so a spec cannot run code.
"""

from __future__ import annotations

import ast
from functools import lru_cache

# What a derive expression may contain: arithmetic, comparisons, boolean logic and method calls on
# columns (pandas.eval syntax); no lambdas, comprehensions, subscripts or private attributes.
_DERIVE_NODES = (
    ast.Expression,
    ast.BoolOp,
    ast.BinOp,
    ast.UnaryOp,
    ast.Compare,
    ast.Call,
    ast.Attribute,
    ast.Name,
    ast.Constant,
    ast.List,
    ast.Tuple,
    ast.keyword,
    ast.Load,
    ast.boolop,
    ast.operator,
    ast.unaryop,
    ast.cmpop,
)


@lru_cache(maxsize=256)
def derive_inputs(expression: str) -> frozenset[str]:
    """The columns a derive expression reads (names that are not called as functions); parsed once per text."""
    tree = ast.parse(expression.strip(), mode="eval")
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    return frozenset(node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and id(node) not in called)


def check_derive(expression: str) -> None:
    """Raise ValueError naming what ``expression`` may not contain (or why it does not parse)."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _DERIVE_NODES):
            raise ValueError(f"{type(node).__name__} is not allowed (only arithmetic, comparisons and method calls)")
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
        if name.startswith("_"):
            raise ValueError(f"names starting with '_' are not allowed ({name!r})")
