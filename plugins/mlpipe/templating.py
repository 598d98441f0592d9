"""The one Jinja2 environment factory of mlpipe: static reports, notifications and the Models view's pages.

Templates are package data of ``mlpipe`` (``templates/reports``, ``templates/notify``, ``ui/templates``),
found through the package (:class:`jinja2.PackageLoader`), so an editable checkout, a wheel and
Airflow's ``plugins/`` folder load the same files. HTML (and SVG / XML) templates are autoescaped:
names and values that come from the data (a category ``<script>``, say) reach a page as text. Text
templates (``.txt``) are not. A variable a template names but the caller did not give fails the
render (:class:`jinja2.StrictUndefined`) instead of leaving a blank in the page.

Jinja2 is imported when an environment is first built, never when this module is (in a task's process
Airflow has imported it already). Compiled templates are kept in Jinja2's per-user bytecode cache
(a ``_jinja2-cache-<uid>`` folder in the system's temporary directory, keyed by each template's
source), so a task's process does not compile them again: the four report templates took ~130 ms to
compile and ~10 ms from the cache on the 2-core development machine (docs/benchmarks.md, "Report rendering").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

    from jinja2 import BytecodeCache, Environment

PACKAGE = "mlpipe"
REPORTS = "templates/reports"
NOTIFY = "templates/notify"
UI = "ui/templates"
AUTOESCAPED = ("html", "htm", "svg", "xml")


def template_dir(folder: str) -> Traversable:
    """The folder of templates ``folder`` (one of REPORTS, NOTIFY, UI) inside the installed package."""
    return resources.files(PACKAGE).joinpath(folder)


@cache
def _bytecode_cache() -> BytecodeCache | None:
    import jinja2

    try:
        return jinja2.FileSystemBytecodeCache()
    except RuntimeError:  # no usable temporary directory of this user's: compile every time
        return None


def environment(
    folder: str, *, filters: Mapping[str, Callable[..., Any]] | None = None, strict: bool = True
) -> Environment:
    """A Jinja2 environment of the templates under ``mlpipe/<folder>``, with ``filters`` added.

    ``strict`` (the default) makes an undefined variable an error; only the Models view, whose dicts
    leave out what a page then tests with ``{% if %}``, renders with Jinja2's lenient default.
    Callers keep their environment (``functools.cache``): building one reads no template yet.
    """
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader(PACKAGE, folder),
        autoescape=jinja2.select_autoescape(AUTOESCAPED, default_for_string=True, default=False),
        undefined=jinja2.StrictUndefined if strict else jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        bytecode_cache=_bytecode_cache(),
    )
    env.filters.update(filters or {})
    return env
