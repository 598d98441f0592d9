"""The layer contracts of pyproject.toml hold (import-linter), so imports keep pointing down and sibling modules
never need each other both ways; the same contracts fail on a tree with a deliberate cycle or upward import."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = "Layers (docs/architecture.md): imports point down only"


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout
    assert f"{LAYERS} KEPT" in out.stdout
    assert "No import cycles between sibling modules KEPT" in out.stdout


def test_contracts_fail_on_a_cycle_and_on_the_ui_and_the_operators_importing_each_other(tmp_path: Path) -> None:
    """The same contracts, run on a copy of the package with three deliberate breaks, name each."""
    package = tmp_path / "plugins" / "mlpipe"
    shutil.copytree(REPO / "plugins" / "mlpipe", package, ignore=shutil.ignore_patterns("__pycache__"))
    # A cycle between sibling stages, hidden inside a function as the old ones were.
    metrics = package / "stages" / "metrics.py"
    cycle = "\n\ndef _cycle() -> None:\n    from mlpipe.stages import evaluate  # noqa\n"
    metrics.write_text(metrics.read_text() + cycle)
    # The UI reaching up into an operator.
    views = package / "ui" / "views.py"
    views.write_text(views.read_text() + "\n\nfrom mlpipe.operators import training  # noqa\n")
    # And back: an operator's link reaching into the UI package for a URL (mlpipe.urls is where they live).
    links = package / "operators" / "links.py"
    links.write_text(links.read_text() + "\n\nfrom mlpipe.ui import views  # noqa\n")
    lint_imports = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "plugins")}
    out = subprocess.run(
        [str(lint_imports), "--no-cache", "--config", str(REPO / "pyproject.toml")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    assert f"{LAYERS} BROKEN" in report, report
    assert "mlpipe.ui is not allowed to import mlpipe.operators" in report, report
    assert "mlpipe.ui.views -> mlpipe.operators.training" in report, report
    assert "mlpipe.operators is not allowed to import mlpipe.ui" in report, report
    assert "mlpipe.operators.links -> mlpipe.ui.views" in report, report
    assert "No import cycles between sibling modules BROKEN" in report, report
    assert "No cycles are allowed in mlpipe.stages." in report, report
    assert "- .metrics -> .evaluate (1 import)" in report, report
