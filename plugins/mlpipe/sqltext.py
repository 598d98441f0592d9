"""SQL text as the database sees it: comments stripped, and the ``:name`` bind parameters that remain.

SQLAlchemy's ``text()`` takes every ``:name`` of the text as a bind parameter, also one inside a
``--`` or ``/* */`` comment; the database then ignores the comment, and the statement has fewer
parameters than were bound ("Incorrect number of bindings supplied"). So mlpipe strips the
comments first, as the database would (string literals and quoted names are left alone), and binds
only what is left.

Standard library only, and fast: the spec loader calls it for every query at DAG-parse time.
"""

from __future__ import annotations

import re
from typing import Any

# SQLAlchemy's own rule for bind parameters in text() (sqlalchemy.sql.elements.TextClause):
# ':name' not preceded by ':', a word character or a backslash, and not followed by ':' ('::cast').
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)", re.UNICODE)
# What may hide a comment marker: literals and quoted names (kept), and the comments themselves.
_LEXEMES = re.compile(
    r"""
      '(?:[^']|'')*'            # a string literal ('' is a quote inside it)
    | "(?:[^"]|"")*"            # a quoted identifier
    | `[^`]*`                   # a MySQL quoted identifier
    | \$(?P<tag>\w*)\$.*?\$(?P=tag)\$  # a PostgreSQL dollar-quoted string
    | --[^\n]*                  # a line comment
    | /\*.*?\*/                 # a block comment
    """,
    re.DOTALL | re.VERBOSE,
)


def _without_comment(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.startswith("--"):
        return ""
    return " " if text.startswith("/*") else text


def strip_comments(sql: str) -> str:
    """``sql`` without its comments, as the database would run it."""
    return _LEXEMES.sub(_without_comment, sql).strip()


def bind_names(sql: str) -> list[str]:
    """The bind parameters of ``sql`` outside comments, in order of first use."""
    return list(dict.fromkeys(_BIND.findall(strip_comments(sql))))


def commented_binds(sql: str) -> list[str]:
    """Bind-like ``:name`` written only inside comments (mistaken for parameters by a reader, not the database)."""
    real = set(bind_names(sql))
    return [name for name in dict.fromkeys(_BIND.findall(sql)) if name not in real]


def executable(sql: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The comment-free text of ``sql`` and those of ``params`` it really binds.

    Binding a parameter the statement does not have fails on some drivers (sqlite3 counts them),
    so a query without ``:as_of`` (``source.as_of: none``) gets no ``as_of``.
    """
    text = strip_comments(sql)
    used = set(_BIND.findall(text))
    return text, {k: v for k, v in params.items() if k in used}
