"""One task of the training DAG run in a fresh process, as a worker of a distributed executor runs it.

Usage: python task_worker.py TASK_ID ARGS_JSON OUT_JSON. ARGS_JSON holds the operator's arguments (the
upstream XComs); OUT_JSON gets what ``execute()`` returned and which heavy libraries the process had
imported by then (tests/operators/test_task_imports.py).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

HEAVY = ("sklearn", "pandas", "pyarrow", "great_expectations", "matplotlib", "scipy", "boto3")
AS_OF = datetime(2013, 12, 1, tzinfo=UTC)


def main(task_id: str, args_file: Path, out_file: Path) -> None:
    from mlpipe.operators import training
    from mlpipe.operators.promotion import RunParamsCheckOperator

    operators = {
        "check_params": RunParamsCheckOperator,
        "extract_snapshot": training.SnapshotExtractOperator,
        "validate_snapshot": training.SnapshotValidateOperator,
        "build_features": training.FeaturesBuildOperator,
        "train_candidates": training.CandidateTrainOperator,
        "evaluate_candidates": training.CandidatesEvaluateOperator,
        "promote_model": training.ModelPromoteOperator,
    }
    before = {m for m in HEAVY if m in sys.modules}
    args = json.loads(args_file.read_text())
    run_id = args.pop("run_id")
    dag_run = SimpleNamespace(
        dag_id=f"{args['pipeline']}_train",
        run_id=run_id,
        run_type="scheduled",
        logical_date=AS_OF,
        run_after=AS_OF,
        conf={},
        triggering_user_name=None,
    )
    context = {"run_id": run_id, "dag_run": dag_run, "params": {}, "triggering_asset_events": {}}
    op = operators[task_id](task_id=task_id, **args)
    try:
        result = op.execute(context)
    finally:
        registry = vars(op).get("registry")
        if registry is not None:
            registry.dispose()
    imported = sorted(m for m in HEAVY if m in sys.modules)
    out_file.write_text(json.dumps({"result": result, "imported": imported, "before_execute": sorted(before)}))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
