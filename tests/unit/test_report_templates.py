"""Reports from Jinja2 templates (templates/reports): each report rendered from a real stage run with a
hostile category in the data (escaped in every page), a missing variable an error, and the templates
shipped as package data that the installed package finds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from markupsafe import escape
from stages.test_reference import PIPELINES, flights

from mlpipe.spec import load_spec
from mlpipe.stages.drift import drift_report
from mlpipe.stages.drift_report import render_drift_report
from mlpipe.stages.html_page import badge_class
from mlpipe.stages.reference import compare, write_report
from mlpipe.storage import LocalStore
from mlpipe.templating import NOTIFY, REPORTS, UI, template_dir
from unit.conftest import tiny_frame
from unit.test_train_evaluate_promote import Pipe

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "plugins" / "mlpipe"
HOSTILE = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


def assert_escaped(page: str) -> None:
    assert HOSTILE not in page and "<script" not in page.lower(), "data reached the page as markup"
    assert ESCAPED in page, "the hostile value is shown, as text"


def sections(page: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", page)


# -- every report from a stage run, a hostile category in its data ------------------------------------


@pytest.fixture
def hostile_pipe(include_tree, make_spec, store, sqlite_registry, tmp_path) -> Pipe:
    """The tiny binary pipeline whose category 'a' is ``<script>…``, with a slice rule on that column."""
    gate = {
        "min_primary": 0.5,
        "max_regression": {"log_loss": 0.05},
        "slices": [{"column": "cat", "max_regression": 0.05, "min_rows": 2}],
    }
    loaded = load_spec(include_tree(make_spec(gate=gate)))
    frame = tiny_frame("binary", 120, seed=3)
    frame["cat"] = frame["cat"].replace({"a": HOSTILE})
    return Pipe(loaded, store, sqlite_registry, frame, tmp_path)


def test_the_evaluation_report_of_a_stage_run(hostile_pipe: Pipe) -> None:
    first = hostile_pipe.run("manual__2026-01-01T00:00:00+00:00")
    hostile_pipe.promote(first)
    second = hostile_pipe.run("manual__2026-01-02T00:00:00+00:00")  # with a champion: slices are judged

    store, verdict = hostile_pipe.store, second.verdict
    page = store.get_bytes(store.key_of(verdict.report_uri)).decode()
    assert_escaped(page)
    assert sections(page) == [
        "Verdict",
        "Candidates and champion on this run's holdout",
        "Slices",
        "Permutation importance",
        "Holdout",
        "Plots",
    ]
    assert f"decision <b>{verdict.decision}</b>; best candidate <b>{verdict.best_candidate}</b>" in page
    assert f"champion v{verdict.champion_version} (scored on this holdout)" in page
    primary = hostile_pipe.loaded.spec.primary_metric
    assert f"<td>{primary} (primary)<td>↑ higher" in page
    assert f"{verdict.candidates[verdict.best_candidate][primary]:.4f}" in page
    for rule in verdict.rules:
        assert f"<code>{rule.rule}</code>" in page
    assert f"<tr><td>cat<td>{ESCAPED}<td" in page, "the hostile category is a slice of the table"
    report_dir = verdict.report_uri.rsplit("/", 1)[0]
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert store.exists(store.key_of(f"{report_dir}/{src}")), src


def test_the_drift_report_of_a_stage_run(tmp_path: Path) -> None:
    reference, current = flights(1), flights(2)
    current.loc[current.index[:300], "carrier"] = HOSTILE  # a category the reference never saw
    report = drift_report(reference, current, numeric=["distance"], categorical=["carrier", "dest"])
    index = render_drift_report(report, reference, current, tmp_path, title=f"drift of {HOSTILE}")

    page = index.read_text(encoding="utf-8")
    assert_escaped(page)
    assert sections(page) == ["Verdict", "Features", "Thresholds", "Distributions"]
    carrier = report.feature("carrier")
    assert carrier.unseen == 1 and carrier.status == "act"
    row = re.search(r'<tr><td><a href="#plot-feature-carrier">carrier</a>(.*?)</tr>', page).group(1)
    assert f"{carrier.unseen} ({carrier.unseen_share:.1%})" in row and f'<span class="muted">{ESCAPED}</span>' in row
    assert f'<span class="badge {badge_class(report.verdict)} verdict">{report.verdict}</span>' in page
    assert len(re.findall(r'<figure id="plot-feature-[a-z_-]+"><img src="feature-[a-z_-]+\.png"', page)) == 3


def test_the_reference_page_of_a_stage_run(tmp_path: Path) -> None:
    spec = load_spec(PIPELINES / "flights_delay.yaml").spec
    current = flights(2)
    current.loc[current.index[:400], "carrier"] = HOSTILE
    report = compare(spec, flights(1), current)
    store = LocalStore(tmp_path)
    uris = write_report(store, "p/runs/r/validate", report)

    page = store.get_bytes(store.key_of(uris["html_uri"])).decode()
    assert_escaped(page)
    assert report.status == "failed"
    rows = re.findall(r"<tr><td><span class=\"badge (\w+)\">(\w+)</span></td><td>(\w+)</td><td>([^<]*)</td>", page)
    assert len(rows) == len(report.findings), "one row per check"
    assert rows[0][:2] == ("act", "fail"), "failed checks first"
    assert ("act", "fail", "unseen_categories", "carrier") in rows
    assert f'<p><span class="badge act verdict">fail</span> {escape(report.summary_line())}</p>' in page


def test_the_run_summary_of_a_stage_run(hostile_pipe: Pipe) -> None:
    from mlpipe.stages.runs import record_run
    from mlpipe.summary import render_summary

    first = hostile_pipe.run("manual__2026-01-01T00:00:00+00:00")
    hostile_pipe.promote(first)
    record_run(hostile_pipe.store, "tiny", first.key, {"run_id": first.run_id, "trigger": "manual", "as_of": "x"})
    text = render_summary("tiny", hostile_pipe.store, hostile_pipe.registry)

    lines = text.splitlines()
    assert lines[0] == f"== tiny: run {first.run_id} ==" and not text.endswith("\n")
    verdict = first.verdict
    metrics = [verdict.primary_metric, *[m for m in verdict.candidates[verdict.best_candidate] if m != "roc_auc"]]
    assert lines[lines.index(next(x for x in lines if x.startswith("metrics"))) :][0] == "metrics     " + "".join(
        f"{m:>18}" for m in ["on holdout", *metrics]
    )
    best = f"{verdict.best_candidate} (best)"
    (row,) = [x for x in lines if x.strip().startswith(best)]
    assert row == "            " + f"{best:>18}" + "".join(
        f"{verdict.candidates[verdict.best_candidate][m]:>18.4f}" for m in metrics
    )
    assert "            champion: none before this run" in lines
    assert f"verdict     BLESSED ({verdict.decision})" in lines
    assert f"champion    now v1 ({verdict.best_candidate})" in text
    assert f"report      {verdict.report_uri}" in lines


def test_a_notification_mail_escapes_its_body() -> None:
    from mlpipe.notify import Message

    mail = Message("s", f"no such column {HOSTILE}\nRun: http://af/run?a=1&b=2").html()
    assert_escaped(mail)
    assert '<a href="http://af/run?a=1&amp;b=2">http://af/run?a=1&amp;b=2</a>' in mail


# -- strict templates ---------------------------------------------------------------------------------


def test_a_variable_the_caller_left_out_fails_the_render() -> None:
    import jinja2

    from mlpipe.stages.html_page import report_template

    with pytest.raises(jinja2.UndefinedError, match="'status' is undefined"):
        report_template("reference.html").render(title="t", subtitle="")
    with pytest.raises(jinja2.UndefinedError):
        report_template("summary.txt").render(pipeline="p")


def test_the_templating_module_does_not_import_jinja2() -> None:
    code = "import sys, mlpipe.templating; assert 'jinja2' not in sys.modules, 'jinja2 imported'"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PACKAGE.parent)}
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, env=env)


# -- package data ---------------------------------------------------------------------------------------


def shipped(folder: str) -> set[str]:
    return {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / folder).iterdir() if p.is_file()}


def test_the_package_finds_its_templates() -> None:
    for folder in (REPORTS, NOTIFY, UI):
        names = {f"{folder}/{t.name}" for t in template_dir(folder).iterdir() if t.is_file()}
        assert names == shipped(folder) and names, folder
    assert {"evaluation.html", "drift.html", "reference.html", "summary.txt"} <= {
        t.name for t in template_dir(REPORTS).iterdir()
    }


def test_a_wheel_carries_every_template_and_renders_from_it(tmp_path: Path) -> None:
    """Build the wheel (setuptools in this venv, nothing fetched) from a copy of the project, unpack it
    as site-packages, and render a report and a notification from there, without plugins/ on the path."""
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copytree(REPO / "plugins", src / "plugins", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(tmp_path / 'dist')!r}))"
    done = subprocess.run([sys.executable, "-c", build], cwd=src, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    wheel = tmp_path / "dist" / done.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for folder in (REPORTS, NOTIFY, UI):
        missing = {f"mlpipe/{n}" for n in shipped(folder)} - names
        assert not missing, f"not in the wheel: {sorted(missing)}"

    code = textwrap.dedent(
        f"""
        import mlpipe
        assert mlpipe.__file__.startswith({str(tmp_path / "site")!r}), mlpipe.__file__
        from mlpipe.stages.reference import ReferenceReport, render_html
        from mlpipe.notify import Event, render
        page = render_html(ReferenceReport("no_reference", {HOSTILE!r}))
        assert "&lt;script&gt;" in page and "<script>" not in page, page
        facts = {{"result": {{"message": "same data"}}, "run_id": "r", "dag_id": "d"}}
        print(render("p", Event("unchanged", facts)).subject)
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().startswith("[mlpipe] p")
