"""A stage run in a child process that stops at a chosen point and waits to be killed (SIGKILL).

Usage: python fault_worker.py PHASE STATE_JSON READY_FILE. The parent waits for READY_FILE, then
kills this process, as a lost worker or an OOM kill would, and retries the stage itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any


def _park(ready: Path) -> None:
    ready.write_text(str(os.getpid()))
    time.sleep(600)


def promote_args(kwargs: dict[str, Any]) -> dict[str, Any]:
    """promote_model's arguments from the state file: the contracts rebuilt from their XCom form."""
    from mlpipe.contracts import Snapshot, TrainedCandidate, Verdict

    return {
        **kwargs,
        "verdict": Verdict.from_xcom(kwargs["verdict"]),
        "trained": [TrainedCandidate.from_xcom(t) for t in kwargs["trained"]],
        "snapshot": Snapshot.from_xcom(kwargs["snapshot"]),
    }


def main(phase: str, state_file: Path, ready: Path) -> None:
    from mlpipe import config
    from mlpipe.registry import Registry
    from mlpipe.spec import find_spec
    from mlpipe.stages import promote as promote_stage
    from mlpipe.stages.train import train_candidate
    from mlpipe.storage import LocalStore

    state: dict[str, Any] = json.loads(state_file.read_text())
    state["promote_kwargs"] = promote_args(state["promote_kwargs"])
    store = LocalStore(config.default_store_root())
    if phase == "train":
        real_replace = os.replace

        def replace_then_park(src: Any, dst: Any) -> None:
            if str(dst).endswith("model.joblib"):
                _park(ready)  # the model's bytes sit complete in a temp file, not yet published
            real_replace(src, dst)

        os.replace = replace_then_park  # type: ignore[assignment]
        train_candidate(
            find_spec(state["pipeline"]),
            store,
            run_key=state["run_key"],
            candidate=state["candidate"],
            train_key=state["features"]["train_key"],
            train_sha256=state["features"]["train_sha256"],
        )
        return

    registry = Registry.from_url(config.default_registry_url())
    if phase == "promote_copy":
        real_replace = os.replace

        def copy_then_park(src: Any, dst: Any) -> None:
            if "/models/" in str(dst):
                _park(ready)  # the champion's copy sits complete in a temp file under models/vN/, not yet renamed
            real_replace(src, dst)

        os.replace = copy_then_park  # type: ignore[assignment]
        promote_stage.promote_model(registry, store, **state["promote_kwargs"])
        return
    real = Registry.register_and_promote

    def before_commit(self: Registry, *args: Any, **kwargs: Any) -> Any:
        _park(ready)  # the model copy is published under models/, the registry not yet written
        return real(self, *args, **kwargs)

    def after_commit(self: Registry, *args: Any, **kwargs: Any) -> Any:
        event = real(self, *args, **kwargs)
        _park(ready)  # committed, but the task never reports back
        return event

    Registry.register_and_promote = before_commit if phase == "promote_before_commit" else after_commit  # type: ignore[method-assign]
    promote_stage.promote_model(registry, store, **state["promote_kwargs"])


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
