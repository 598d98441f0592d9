"""Promotion runs in a task process of its own: it must not pay for importing the training stack.

Under a distributed executor every task is a fresh process, so a module-level import is paid once
per task; `promote_model` copies a file and writes two registry rows, and importing scikit-learn and
pandas for that (through a file-name constant) once cost it most of its time (docs/benchmarks.md).
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("sklearn", "pandas", "great_expectations", "pyarrow", "matplotlib")


def test_the_promotion_stage_imports_no_training_stack() -> None:
    code = f"import sys, mlpipe.stages.promote; print(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == []
