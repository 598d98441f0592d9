"""What every mlpipe operator shares: the base class, the user-error policy and the run's facts.

:class:`PipelineOperator` gives an operator its pipeline's spec, artifact store, registry and run key;
:func:`fail_fast_on_user_errors` is the one policy deciding what Airflow retries; :func:`run_info` reads
what started the run; :func:`train_params` checks a training run's Params where the run starts, and
:func:`emit_champion_event` puts a champion change in the task's asset event. Heavy libraries are
imported inside the functions only, so DAG parsing stays cheap.
"""

from __future__ import annotations

import atexit
import gc
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Param
from airflow.sdk.exceptions import AirflowFailException

from mlpipe import config
from mlpipe.assets import champion_event_extra
from mlpipe.errors import MlpipeError, ParamsError, is_input_error

# The task logs' line giving a task's start-up (bench/task_startup.py looks for it).
STARTUP_LOG_MARK = "mlpipe operator start:"
# Set to 1 to have a process that ran mlpipe tasks in-process finalize its whole heap at exit.
FULL_EXIT_ENV = "MLPIPE_FULL_EXIT"
_exit_hook: list[bool] = []

if TYPE_CHECKING:
    from airflow.sdk import Context

    from mlpipe.registry import ChampionEvent, Registry
    from mlpipe.spec import LoadedSpec, PipelineSpec
    from mlpipe.storage import ArtifactStore


@contextmanager
def fail_fast_on_user_errors() -> Iterator[None]:
    """Where every operator decides whether a failure is retried: the input's errors are not.

    Errors the input causes (a missing or unreadable source, a query the source rejects, data failing
    its suite, a bad spec, setting or run Param, a tampered artifact, a read-only registry, a champion
    change the registry refuses) fail the task at once
    with their message (see :func:`mlpipe.errors.is_input_error`); connection failures keep Airflow's
    retries with backoff.
    """
    try:
        yield
    except MlpipeError as exc:
        if not is_input_error(exc):
            raise
        # "from None": the task log shows the message once, not again as the cause's traceback (the
        # cause stays reachable as __context__).
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from None


def skip_heap_collection_at_exit() -> bool:
    """Let a process that runs tasks in-process (``airflow dags test``, ``airflow tasks test``) exit
    without collecting its whole heap; True when the hook is (now or already) registered.

    After a DAG run finished, CPython's finalization runs full garbage collections over every object
    the process made (Airflow, GX, pandas, scikit-learn and the run's data: about a million objects),
    which took 2.2-2.5 s on an idle machine and tens of seconds on a loaded one, after all work and
    output were done (docs/benchmarks.md section 14). An ``atexit`` handler freezing the heap
    (:func:`gc.freeze`) makes those collections skip it; the operating system frees the memory.
    Everything that must run at exit still runs: Airflow's and logging's ``atexit`` handlers (which
    close the metadata DB's pool and flush and close the log handlers), ``weakref.finalize``
    callbacks (temporary directories), the interpreter's flush of stdout and stderr, and the flush of
    every file still open for writing (the handler flushes them first: a file the program never closed
    would otherwise lose its buffer). What is skipped are the ``__del__`` methods of objects the heap
    still holds, as when a process ends with ``os._exit``, which is how Airflow's forked task
    processes end under an executor (this hook changes nothing there). ``MLPIPE_FULL_EXIT=1`` keeps
    the full finalization (to debug a leak).
    """
    if _exit_hook:
        return True
    if os.environ.get(FULL_EXIT_ENV, "").strip().lower() in ("1", "true", "yes"):
        return False
    atexit.register(_flush_files_and_freeze_heap)
    _exit_hook.append(True)
    return True


def _flush_files_and_freeze_heap() -> None:
    """Flush every file object still open for writing, then freeze the heap (see above).

    One pass over the heap's objects comparing exact types: ~0.06 s per million objects, a fraction of
    the collections it saves.
    """
    import io

    writable = (io.TextIOWrapper, io.BufferedWriter, io.BufferedRandom)
    for obj in [o for o in gc.get_objects() if type(o) in writable]:
        try:
            if not obj.closed:
                obj.flush()
        except Exception:  # a broken pipe or a full disk at exit must not stop the others
            pass
    gc.freeze()


def run_info(context: Context) -> dict[str, Any]:
    """What started this run and when it is 'as of', from the Airflow context."""
    from mlpipe.stages.runs import trigger_of

    dag_run = context["dag_run"]
    run_type = getattr(dag_run, "run_type", None)
    run_type = getattr(run_type, "value", run_type)
    as_of = getattr(dag_run, "logical_date", None) or dag_run.run_after
    events = []
    for asset, asset_events in (context.get("triggering_asset_events") or {}).items():
        for event in asset_events:
            name = getattr(asset, "name", None) or getattr(getattr(event, "asset", None), "name", str(asset))
            events.append({"asset": name, "extra": dict(getattr(event, "extra", None) or {})})
    return {
        "trigger": trigger_of(run_type, [e["asset"] for e in events]),
        "asset_events": events,
        "dag_id": dag_run.dag_id,
        "run_id": dag_run.run_id,
        "run_type": run_type,
        "triggering_user": getattr(dag_run, "triggering_user_name", None),
        "conf": dict(getattr(dag_run, "conf", None) or {}),
        "as_of": as_of.isoformat(),
    }


def only_candidates(loaded: LoadedSpec, names: list[str]) -> LoadedSpec:
    """``loaded`` with only the candidates ``names`` (a run that trains some of them judges those)."""
    if {c.name for c in loaded.spec.candidates} == set(names):
        return loaded
    kept = [c for c in loaded.spec.candidates if c.name in names]
    return loaded.model_copy(update={"spec": loaded.spec.model_copy(update={"candidates": kept})})


def materialize(values: Any) -> list[Any]:
    """A mapped task's results as a list; indexing by length avoids probing past the last XCom."""
    return [values[i] for i in range(len(values))]


class PipelineOperator(BaseOperator):
    """Shared plumbing: the pipeline's spec, the artifact store and the run's key."""

    template_fields: Sequence[str] = ("pipeline",)
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        pipeline: str,
        store_conn_id: str = config.STORE_CONN_ID,
        registry_conn_id: str = config.REGISTRY_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.store_conn_id = store_conn_id
        self.registry_conn_id = registry_conn_id

    @cached_property
    def loaded(self) -> LoadedSpec:
        from mlpipe.spec import find_spec

        # A spec removed or broken since the DAG was parsed is a user error wherever it is first
        # read (some execute()s read it outside their fail-fast block): no retry can fix it.
        with fail_fast_on_user_errors():
            return find_spec(self.pipeline)

    @cached_property
    def store(self) -> ArtifactStore:
        from mlpipe.hooks.store import open_store

        return open_store(self.store_conn_id)

    @cached_property
    def registry(self) -> Registry:
        from mlpipe.hooks.sql import open_registry

        return open_registry(self.registry_conn_id)

    def train_params(self, context: Context) -> TrainParams:
        """This training run's Params checked against the spec; a bad one fails the task at once (no retry)."""
        with fail_fast_on_user_errors():
            return train_params(context.get("params"), self.loaded.spec)

    @staticmethod
    def run_key(context: Context) -> str:
        from mlpipe.layout import run_key

        return run_key(context["run_id"])

    def pre_execute(self, context: Context) -> None:
        """Log the task's start-up: how long after its process started the operator gets control.

        Under LocalExecutor and Celery each task is a fresh process (forked by its supervisor); what it
        does before execute() (the SDK's start-up, parsing the DAG file, Connections of the run) is paid
        per task. docs/benchmarks.md section 18 reads this line from the task logs.
        """
        import psutil

        self.log.info(
            "%s %.3f s after the task process started (pid %d)",
            STARTUP_LOG_MARK,
            time.time() - psutil.Process().create_time(),
            os.getpid(),
        )
        skip_heap_collection_at_exit()
        super().pre_execute(context)  # a pre_execute hook given to the operator still runs

    # What execute() returned, for the OpenLineage listener (set only by operators that report lineage).
    lineage_result: dict[str, Any] | None = None

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """Inputs and outputs for OpenLineage (called by its listener only when a transport is configured)."""
        from mlpipe.operators.lineage import operator_lineage

        return operator_lineage(self)

    @contextmanager
    def indexing_run(self, context: Context) -> Iterator[None]:
        """Bring the run's row of the run index up to date with its files once the block wrote them,
        also when it fails (a failed run is listed too). A failure to index is logged, not raised: the
        work is done and in the store, the source of truth; the run's next task rewrites the whole row
        from the store, and ``python -m mlpipe registry reindex`` rebuilds it."""
        from mlpipe.stages.runs import index_run

        try:
            yield
        finally:
            try:
                index_run(self.registry, self.store, self.pipeline, self.run_key(context))
            except Exception as exc:
                self.log.warning(
                    "Could not update the run index (the Models view may miss this run until its next task "
                    "or `python -m mlpipe registry reindex %s`): %s: %s",
                    self.pipeline,
                    type(exc).__name__,
                    exc,
                )


@dataclass(frozen=True)
class TrainParams:
    """A training run's Params, checked against the spec."""

    force_reason: str | None  # set (non-empty) when the run forces the promotion
    candidates: list[str]  # the candidates to train and judge, in spec order
    fresh_training: bool = False  # train and evaluate even when an earlier run had the same inputs


def train_param_specs(spec: PipelineSpec) -> dict[str, Param]:
    """The Params of ``<name>_train``, as its trigger form shows them."""
    names = [c.name for c in spec.candidates]
    return {
        "force_promotion": Param(
            False,
            type="boolean",
            title="Force the promotion",
            description="Promote the best candidate even if the gate rejects it (or the champion cannot be "
            "scored). Needs force_reason; the champion log records a 'force' event with it and who triggered "
            "the run, and the verdict still says the model was not blessed.",
        ),
        "force_reason": Param(
            "",
            type="string",
            title="Why force it",
            description="Required when force_promotion is on: why this model must be champion (kept in the "
            "champion log). Ignored otherwise.",
        ),
        "fresh_training": Param(
            False,
            type="boolean",
            title="Train afresh",
            description="Train and evaluate even if an earlier run had the same data (snapshot sha256), spec "
            "and code version; by default such a run takes that run's trained candidates (and its evaluation "
            "while the champion is unchanged) instead of training again.",
        ),
        "candidates": Param(
            names,
            type="array",
            items={"type": "string", "enum": names},
            minItems=1,
            uniqueItems=True,
            title="Candidates to train",
            description="Train and judge only these of the spec's candidates (default: all of them: "
            + ", ".join(names)
            + ").",
        ),
    }


def train_params(params: Any, spec: PipelineSpec) -> TrainParams:
    """``params`` (the run's, possibly missing keys) checked against ``spec``; a bad one raises :class:`ParamsError`
    (an input error: the operators' policy fails the task at once, see :meth:`PipelineOperator.train_params`)."""
    params = params or {}
    force = params.get("force_promotion", False)
    if not isinstance(force, bool):
        raise ParamsError(f"param force_promotion: must be true or false, got {force!r}")
    reason = params.get("force_reason") or ""
    if not isinstance(reason, str):
        raise ParamsError(f"param force_reason: must be text, got {reason!r}")
    if force and not reason.strip():
        raise ParamsError(
            f"param force_reason: forcing the promotion of {spec.name} (force_promotion=true) needs a reason; "
            "trigger the run again with force_reason set (it is kept in the champion log)"
        )
    known = [c.name for c in spec.candidates]
    chosen = params.get("candidates") or known
    if isinstance(chosen, str) or not all(isinstance(c, str) for c in chosen):
        raise ParamsError(f"param candidates: must be a list of candidate names, got {chosen!r}")
    unknown = [c for c in chosen if c not in known]
    if unknown:
        raise ParamsError(
            f"param candidates: {unknown} not in the spec of {spec.name} ({spec_file(spec)}); its candidates: {known}"
        )
    fresh = params.get("fresh_training", False)
    if not isinstance(fresh, bool):
        raise ParamsError(f"param fresh_training: must be true or false, got {fresh!r}")
    return TrainParams(reason.strip() if force else None, [c for c in known if c in chosen], fresh)


def spec_file(spec: PipelineSpec) -> str:
    return f"include/pipelines/{spec.name}.yaml"


def emit_champion_event(context: Context, outlets: Sequence[Any], event: ChampionEvent) -> dict[str, Any]:
    """Put ``event`` in the extra of the task's champion asset outlet (sent when the task succeeds)."""
    extra = champion_event_extra(event)
    for outlet in outlets:
        context["outlet_events"][outlet].extra = extra
    return extra


def actor_of(context: Context) -> str:
    """Who a champion change by hand is credited to: the run's triggering user, else "airflow"."""
    return run_info(context)["triggering_user"] or "airflow"
