"""Promotion and the split run in task processes of their own: they must not pay for importing the training stack.

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


def test_the_split_imports_no_scikit_learn_and_old_models_still_find_their_encoder() -> None:
    """build_features only splits and writes Parquet (section 17 of docs/benchmarks.md); models saved
    before the feature transformer moved to mlpipe.stages.preprocess name it in mlpipe.stages.features."""
    code = (
        "import pickle, sys, mlpipe.stages.features\n"
        "print('sklearn' in sys.modules)\n"
        "cls = pickle.loads(b'cmlpipe.stages.features\\nDatePartsEncoder\\n.')\n"
        "print(cls.__module__, cls().fit([[0]]).n_parts_)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "mlpipe.stages.preprocess", "3"]


def test_validation_against_a_reference_imports_no_scipy_stats_until_a_ks_test_runs() -> None:
    """validate_snapshot imports the reference checks (PSI and JS); scipy.stats (~0.4 s of a fresh
    process) is imported by the KS test only."""
    code = (
        "import sys, mlpipe.stages.validate, mlpipe.stages.reference, mlpipe.stages.drift as d\n"
        "print('scipy.stats' in sys.modules, 'sklearn' in sys.modules)\n"
        "print(round(d.ks([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])[0], 3), 'scipy.stats' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["False", "False", "0.0", "True"]
