"""A process that ran mlpipe tasks in-process exits without collecting its heap, and loses nothing.

``airflow dags test`` spent 2.2-2.5 s (idle machine) after the DAG run finished in CPython's
finalization, collecting the million objects of Airflow, GX and the run (docs/benchmarks.md section
14). ``PipelineOperator.pre_execute`` registers an ``atexit`` handler that freezes the heap; these
tests run a child process with a large cyclic heap both ways and check the exit got faster while
everything the process must do at exit still happens.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHILD = r"""
import atexit, json, sys, tempfile, time
from pathlib import Path

from mlpipe.operators import base

out = Path(sys.argv[1])
registered = [base.skip_heap_collection_at_exit(), base.skip_heap_collection_at_exit()]
# Registered after the hook, so it runs before it (atexit is last in, first out); logging's
# handlers and Airflow's were registered before it and run after.
atexit.register(lambda: (out / "atexit.txt").write_text("ran"))
log = open(out / "buffered.txt", "w")  # never closed nor flushed by the program: left to exit
log.write("written at exit\n")
scratch = tempfile.TemporaryDirectory()  # removed at exit by its weakref.finalize
(out / "scratch.txt").write_text(scratch.name)


class Node:
    def __init__(self, prev):
        self.prev, self.next, self.payload = prev, None, {"k": [prev]}
        if prev is not None:
            prev.next = self


heap, prev = [], None
for _ in range(300_000):
    prev = Node(prev)
    heap.append(prev)
(out / "state.json").write_text(json.dumps({"registered": registered, "callbacks": atexit._ncallbacks()}))
print("stdout survives", end="")  # a pipe: block-buffered, flushed by the interpreter at exit
print(f"\nexit-from {time.time()}")
"""


def _run(tmp: Path, *, full_exit: bool) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLPIPE_FULL_EXIT"}
    if full_exit:
        env["MLPIPE_FULL_EXIT"] = "1"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate(timeout=300)
    ended = time.time()
    assert proc.returncode == 0, stderr
    exit_from = float(stdout.rsplit("exit-from ", 1)[1])
    return ended - exit_from, stdout


def test_the_hook_skips_the_exit_collection_and_keeps_every_exit_duty(tmp_path: Path) -> None:
    hooked_seconds, hooked_out = _run(tmp_path / "hooked", full_exit=False)
    full_seconds, full_out = _run(tmp_path / "full", full_exit=True)

    for run, out in (("hooked", hooked_out), ("full", full_out)):
        folder = tmp_path / run
        assert out.startswith("stdout survives"), (run, out)
        assert (folder / "atexit.txt").read_text() == "ran", run
        assert (folder / "buffered.txt").read_text() == "written at exit\n", run
        assert not Path((folder / "scratch.txt").read_text()).exists(), run

    hooked = json.loads((tmp_path / "hooked" / "state.json").read_text())
    full = json.loads((tmp_path / "full" / "state.json").read_text())
    # Registered once however often operators start in the process; not at all with MLPIPE_FULL_EXIT.
    assert hooked["registered"] == [True, True] and full["registered"] == [False, False]
    assert hooked["callbacks"] == full["callbacks"] + 1
    # 300,000 objects in cycles (900,000 with their dicts and lists): the full finalization collects
    # them (~0.3 s idle), the hooked one leaves them to the operating system.
    assert hooked_seconds < full_seconds / 2, (hooked_seconds, full_seconds)


@pytest.mark.parametrize("value", ["1", "true", "YES"])
def test_full_exit_is_kept_when_asked(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from mlpipe.operators import base

    monkeypatch.setattr(base, "_exit_hook", [])
    monkeypatch.setenv("MLPIPE_FULL_EXIT", value)
    assert base.skip_heap_collection_at_exit() is False
    assert base._exit_hook == []
