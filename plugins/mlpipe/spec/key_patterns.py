"""The S3 key patterns of a source: its glob or regex on the keys, its partition template, the formats by suffix.

Each pattern is turned into a compiled regex once per process (cached by its text), not once per
object listed or read: a source of thousands of objects asks for the same few patterns again and again.
"""

from __future__ import annotations

import re
from functools import lru_cache

FORMAT_SUFFIXES: dict[str, tuple[str, ...]] = {"parquet": (".parquet", ".pq"), "csv": (".csv", ".csv.gz")}
# strftime directives a partition template may use, with the digits each one matches in a key.
PARTITION_DIRECTIVES = {"Y": r"\d{4}", "m": r"\d{2}", "d": r"\d{2}", "j": r"\d{3}", "H": r"\d{2}", "M": r"\d{2}"}


def glob_regex(pattern: str) -> str:
    """A glob on S3 keys as a regex: ``*``, ``?`` and ``[...]`` stay within one path segment, ``**`` crosses them."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


@lru_cache(maxsize=256)
def partition_regex(template: str) -> tuple[re.Pattern[str], str]:
    """The regex that finds ``template``'s date in a key (a group per directive) and the partition's period;
    built and compiled once per template (a bad one raises ValueError each time: errors are not cached)."""
    parts: list[str] = []
    seen: list[str] = []
    i = 0
    while i < len(template):
        if template[i] != "%":
            parts.append(re.escape(template[i]))
            i += 1
            continue
        directive = template[i + 1 : i + 2]
        i += 2
        if directive == "%":
            parts.append("%")
        elif directive in PARTITION_DIRECTIVES and directive not in seen:
            seen.append(directive)
            parts.append(f"(?P<{directive}>{PARTITION_DIRECTIVES[directive]})")
        elif directive in seen:
            raise ValueError(f"%{directive} appears more than once")
        else:
            allowed = ", ".join(f"%{d}" for d in PARTITION_DIRECTIVES)
            raise ValueError(f"unsupported directive %{directive or '<end>'} (allowed: {allowed}, %%)")
    problems = []
    if "Y" not in seen:
        problems.append("needs %Y")
    if "d" in seen and "m" not in seen:
        problems.append("%d needs %m")
    if "j" in seen and ("m" in seen or "d" in seen):
        problems.append("%j (day of the year) excludes %m and %d")
    if "H" in seen and not {"d", "j"} & set(seen):
        problems.append("%H needs a day (%d or %j)")
    if "M" in seen and "H" not in seen:
        problems.append("%M needs %H")
    if problems:
        raise ValueError("; ".join(problems))
    period = next(
        p
        for d, p in (("M", "minute"), ("H", "hour"), ("d", "day"), ("j", "day"), ("m", "month"), ("Y", "year"))
        if d in seen
    )
    # Anchored at the start of a path segment, so 'date=%Y-%m-%d' does not match inside 'update=...'.
    return re.compile(r"(?:^|/)" + "".join(parts)), period


@lru_cache(maxsize=256)
def compile_key_filter(key_regex: str | None, key_pattern: str | None) -> re.Pattern[str] | None:
    """The compiled full-match pattern of a source's ``key_regex`` or ``key_pattern`` (a glob), once per text;
    None when it has neither (every key with a known suffix is the source's)."""
    if key_regex is not None:
        return re.compile(key_regex)
    return re.compile(glob_regex(key_pattern)) if key_pattern is not None else None


def format_of_key(key: str) -> str | None:
    """The format a key's suffix names (None if none does)."""
    lowered = key.lower()
    return next((fmt for fmt, suffixes in FORMAT_SUFFIXES.items() if lowered.endswith(suffixes)), None)
