"""Reading a spec: the YAML file validated into a :class:`LoadedSpec` with the files it names, or a
:class:`~mlpipe.errors.SpecError` naming the file, the field and what is allowed.

Cheap to import (pydantic + yaml only): the DAG factory loads every spec at parse time.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mlpipe import config
from mlpipe.errors import SpecError
from mlpipe.spec.schema import NAME_PATTERN, PipelineSpec


class LoadedSpec(BaseModel):
    """A validated spec with where it came from and the files it refers to."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    spec: PipelineSpec
    path: Path
    query_path: Path | None  # the SQL file of a sql source; None for other kinds
    suite_path: Path
    score_query_path: Path | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def query_text(self) -> str:
        if self.query_path is None:
            raise SpecError(str(self.path), [f"source: the {self.spec.source.kind} source has no SQL query"])
        return self.query_path.read_text(encoding="utf-8")

    def score_query_text(self) -> str:
        """The SQL that selects the rows to score: ``score.query``, else the training query."""
        return (self.score_query_path or self.query_path).read_text(encoding="utf-8")

    def sha256(self) -> str:
        """Hash of everything that defines the pipeline: the spec, its SQL (if any) and its suite."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.spec.model_dump(mode="json"), sort_keys=True).encode())
        if self.query_path is not None:
            digest.update(self.query_path.read_bytes())
        digest.update(self.suite_path.read_bytes())
        return digest.hexdigest()


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        # The source's kind tag is part of pydantic's location ('source.s3.bucket'): leave it out.
        parts = err["loc"]
        if len(parts) > 1 and parts[0] == "source" and parts[1] in ("sql", "s3"):
            parts = (parts[0], *parts[2:])
        loc = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in parts).replace(".[", "[")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see docs/spec.md for the fields)"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "union_tag_invalid":
            loc, msg = f"{loc}.kind", f"must be 'sql' or 's3' (got {err['ctx']['tag']!r})"
        problems.append(f"{loc or '<top>'}: {msg}")
    return problems


def parse_spec(data: Any, path: Path) -> PipelineSpec:
    if not isinstance(data, dict):
        raise SpecError(str(path), ["<top>: the file must hold a YAML mapping of spec fields"])
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(str(path), _format_errors(exc)) from None
    if spec.name != path.stem:
        raise SpecError(str(path), [f"name: {spec.name!r} must equal the file name {path.stem!r}"])
    return spec


def _load_yaml(raw: str) -> Any:
    """libyaml's safe loader when PyYAML has it (the pure-Python one was half of parsing 103 specs);
    a file it refuses is read again by the pure-Python loader, whose error messages the docs show."""
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(raw, Loader=fast)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(raw)


def load_spec(path: Path | str, include: Path | None = None) -> LoadedSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming the file and fields."""
    path = Path(path)
    include = include or path.resolve().parent.parent
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(str(path), [f"<file>: cannot read ({exc.strerror})"]) from None
    try:
        data = _load_yaml(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "<file>"
        raise SpecError(str(path), [f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"]) from None
    spec = parse_spec(data, path)
    query_path = include / "sql" / spec.source.query if spec.source.kind == "sql" else None
    suite_path = include / "expectations" / spec.validation.suite
    score_query_path = include / "sql" / spec.score.query if spec.score and spec.score.query else None
    missing = []
    if query_path is not None and not query_path.is_file():
        missing.append(f"source.query: file {query_path} not found")
    if not suite_path.is_file():
        missing.append(f"validation.suite: file {suite_path} not found")
    if score_query_path is not None and not score_query_path.is_file():
        missing.append(f"score.query: file {score_query_path} not found")
    if missing:
        raise SpecError(str(path), missing)
    problems = _query_problems(spec, query_path, score_query_path)
    if problems:
        raise SpecError(str(path), problems)
    return LoadedSpec(
        spec=spec, path=path, query_path=query_path, suite_path=suite_path, score_query_path=score_query_path
    )


def _query_problems(spec: PipelineSpec, query_path: Path | None, score_query_path: Path | None) -> list[str]:
    """What the SQL files' bind parameters (outside comments) say is wrong with the spec's source."""
    from mlpipe.sqltext import bind_names, commented_binds

    if query_path is None:
        return []
    source, problems = spec.source, []
    provided = {*source.params, "as_of"}
    for field, path in (("source.query", query_path), ("score.query", score_query_path)):
        if path is None:
            continue
        sql = path.read_text(encoding="utf-8")
        binds = bind_names(sql)
        unknown = [name for name in binds if name not in provided]
        if unknown:
            problems.append(
                f"{field}: {path.name} binds {', '.join(':' + n for n in unknown)}, which neither source.params "
                "nor mlpipe (:as_of) provides"
            )
        if field == "source.query" and source.as_of == "required" and "as_of" not in binds:
            only_comment = "as_of" in commented_binds(sql)
            problems.append(
                f"source.query: {path.name} has no :as_of bind parameter"
                + (" outside comments (the database ignores the one in a comment)" if only_comment else "")
                + "; bound to the run's logical date, it makes a re-run read the same rows: add "
                "'WHERE <time column> < :as_of', or set source.as_of: none for a table without a time column"
            )
        if field == "source.query":
            problems += [
                f"source.params.{name}: {path.name} has no :{name} (outside comments)"
                for name in source.params
                if name not in binds
            ]
    return problems


def spec_paths(pipelines_dir: Path | None = None) -> list[Path]:
    folder = pipelines_dir or config.pipelines_dir()
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})


def find_spec(name: str) -> LoadedSpec:
    """Load the spec of pipeline ``name`` from the include tree."""
    if not re.match(NAME_PATTERN, name):
        raise SpecError(name, [f"name: {name!r} is not a pipeline name ({NAME_PATTERN})"])
    for path in spec_paths():
        if path.stem == name:
            return load_spec(path)
    known = [p.stem for p in spec_paths()]
    raise SpecError(str(config.pipelines_dir() / f"{name}.yaml"), [f"<file>: no such pipeline; known: {known}"])
