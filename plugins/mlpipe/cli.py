"""The ``mlpipe`` command line (also ``python -m mlpipe``): registry queries, demo data and the demo summary."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mlpipe import config
from mlpipe.demo import SEED_UNTIL
from mlpipe.errors import MlpipeError


def _registry() -> Any:
    from mlpipe.hooks.sql import open_registry

    return open_registry()


def _store() -> Any:
    from mlpipe.hooks.store import open_store

    return open_store()


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def cmd_registry_list(args: argparse.Namespace) -> int:
    reg = _registry()
    versions = reg.list_versions(args.pipeline)
    champ = reg.champion(args.pipeline)
    if args.json:
        _print_json([{**v.as_dict(), "champion": champ is not None and v.version == champ.version} for v in versions])
        return 0
    if not versions:
        print(f"{args.pipeline}: no model versions yet")
        return 0
    primary = _primary_metric(args.pipeline)
    print(f"{'':2}{'version':>7}  {'candidate':<12} {primary or 'metric':>10}  {'created (UTC)':<20} run")
    for v in versions:
        mark = "*" if champ and v.version == champ.version else " "
        value = v.metrics.get(primary) if primary else None
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        created = v.created_at.strftime("%Y-%m-%d %H:%M:%S") if v.created_at else "-"
        print(f"{mark:2}{v.version:>7}  {v.candidate:<12} {shown:>10}  {created:<20} {v.run_id}")
    print("(* = champion)")
    return 0


def cmd_registry_runs(args: argparse.Namespace) -> int:
    from mlpipe.stages.runs import indexed_runs

    runs = indexed_runs(_registry(), _store(), args.pipeline, newest=args.last)
    if args.json:
        _print_json(runs)
        return 0
    if not runs:
        print(f"{args.pipeline}: no recorded runs yet")
        return 0
    print(f"{'as of':<26} {'trigger':<9} {'verdict':<8} {'best':<12} {'value':>8}  run")
    for run in runs:
        brief = run.get("verdict") or {}
        value = brief.get("primary_value")
        shown = f"{value:.4f}" if isinstance(value, float) else "-"
        decision = brief.get("decision") or "-"
        reused = " (reused)" if brief.get("reused_from") else ""
        print(
            f"{run['as_of']:<26} {run.get('trigger') or '-':<9} {decision:<8} "
            f"{brief.get('best_candidate') or '-':<12} {shown:>8}  {run.get('run_id')}{reused}"
        )
    return 0


def cmd_registry_reindex(args: argparse.Namespace) -> int:
    from mlpipe.stages.runs import reindex

    count = reindex(_registry(), _store(), args.pipeline)
    print(f"{args.pipeline}: run index rebuilt from the artifact store, {count} runs")
    return 0


def _primary_metric(pipeline: str) -> str | None:
    from mlpipe.spec import find_spec

    try:
        return find_spec(pipeline).spec.primary_metric
    except MlpipeError:
        return None


def cmd_registry_show(args: argparse.Namespace) -> int:
    reg = _registry()
    v = reg.get_version(args.pipeline, args.version)
    champ = reg.champion(args.pipeline)
    out = {**v.as_dict(), "champion": champ is not None and champ.version == v.version}
    if args.json:
        _print_json(out)
    else:
        for key, value in out.items():
            print(f"{key:>16}: {json.dumps(value, default=str) if isinstance(value, (dict, list)) else value}")
    return 0


def cmd_registry_champion(args: argparse.Namespace) -> int:
    reg = _registry()
    champ = reg.champion(args.pipeline)
    if champ is None:
        print(f"pipeline {args.pipeline!r} has no champion yet (run {args.pipeline}_train)", file=sys.stderr)
        return 1
    history = reg.champion_history(args.pipeline)
    out = {**champ.as_dict(), "promotion": history[-1].as_dict()}
    if args.json:
        _print_json(out)
    else:
        print(f"{args.pipeline} champion: v{champ.version} ({champ.candidate}, {champ.estimator})")
        print(f"  metrics: {json.dumps(champ.metrics)}")
        print(f"  data sha256: {champ.data_sha256} ({champ.data_rows} rows); run {champ.run_id}")
        print(f"  promoted {history[-1].created_at:%Y-%m-%d %H:%M:%S} UTC by {history[-1].actor}: {history[-1].action}")
        print(f"  artifact: {champ.artifact_key} in the artifact store (sha256 {champ.artifact_sha256})")
    return 0


def cmd_registry_history(args: argparse.Namespace) -> int:
    events = _registry().champion_history(args.pipeline)
    if args.json:
        _print_json([e.as_dict() for e in events])
        return 0
    for e in events:
        prev = f"v{e.previous_version}" if e.previous_version else "none"
        print(
            f"#{e.seq} {e.created_at:%Y-%m-%d %H:%M:%S} {e.action:<8} {prev} -> v{e.version} by {e.actor}: {e.reason}"
        )
    return 0


def cmd_registry_rollback(args: argparse.Namespace) -> int:
    import getpass

    from mlpipe.assets import champion_event_extra

    actor = args.actor or f"{getpass.getuser()} (cli)"
    event = _registry().rollback(args.pipeline, args.version, reason=args.reason, actor=actor)
    print(
        f"{args.pipeline}: champion v{event.previous_version} -> v{event.version} "
        f"(rollback, champion log #{event.seq}, by {event.actor}: {event.reason})"
    )
    print(_emit_champion_event(args.pipeline, champion_event_extra(event)))
    return 0


def _emit_champion_event(pipeline: str, extra: dict[str, Any]) -> str:
    """Emit the pipeline's champion asset event and say how: through Airflow's REST API when an API server
    is configured (``MLPIPE_AIRFLOW_API_URL``), else straight into Airflow's metadata database."""
    from mlpipe.hooks.airflow_api import AirflowApi

    api = AirflowApi.from_env()
    if api is not None:
        return _emit_through_api(api, pipeline, extra)
    return _emit_into_metadata_db(pipeline, extra)


def _emit_through_api(api: Any, pipeline: str, extra: dict[str, Any]) -> str:
    from mlpipe.assets import champion_asset
    from mlpipe.hooks.airflow_api import AirflowApiError

    asset = champion_asset(pipeline)
    try:
        token = api.access_token()
        asset_id = api.asset_id(asset.name, asset.uri, token)
        if asset_id is None:
            return (
                f"champion asset event NOT emitted: the Airflow API at {api.base_url} knows no asset {asset.name!r} "
                f"(the DAGs were never parsed); the registry is rolled back: trigger {pipeline}_score by hand"
            )
        event = api.create_asset_event(asset_id, extra, token)
    except AirflowApiError as exc:  # the rollback itself stands; say what to do
        return (
            f"champion asset event NOT emitted through Airflow's REST API ({exc}); the registry is rolled back: "
            f"trigger {pipeline}_score by hand, or POST the event to {api.base_url}/api/v2/assets/events"
        )
    return (
        f"emitted asset event {asset.name} (id {event['id']}) through Airflow's REST API at {api.base_url}: "
        f"DAGs scheduled on it ({pipeline}_score) are queued"
    )


def _emit_into_metadata_db(pipeline: str, extra: dict[str, Any]) -> str:
    """Record the event in the Airflow metadata DB (as the REST API would): where no API server is configured."""
    from mlpipe.assets import champion_asset

    asset = champion_asset(pipeline)
    try:
        from airflow.assets.manager import asset_manager
        from airflow.models.asset import AssetModel
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            model = session.scalar(select(AssetModel).where(AssetModel.name == asset.name, AssetModel.uri == asset.uri))
            if model is None:
                return (
                    f"champion asset event NOT emitted: Airflow knows no asset {asset.name!r} (the DAGs were never "
                    f"parsed); the registry is rolled back: trigger {pipeline}_score by hand to score with it"
                )
            event = asset_manager.register_asset_change(asset=model, extra=extra, source_is_api=True, session=session)
    except Exception as exc:  # any failure to reach Airflow's database: the rollback itself stands
        return (
            f"champion asset event NOT emitted: Airflow's metadata database is not reachable "
            f"({type(exc).__name__}: {exc}); the registry is rolled back: trigger {pipeline}_score by hand, "
            f"or set MLPIPE_AIRFLOW_API_URL to go through Airflow's REST API"
        )
    return (
        f"emitted asset event {asset.name} (id {event.id}) into Airflow's metadata database (no API server "
        f"configured: MLPIPE_AIRFLOW_API_URL is unset): DAGs scheduled on it ({pipeline}_score) are queued"
    )


def cmd_registry_upgrade(args: argparse.Namespace) -> int:
    from mlpipe import migrations
    from mlpipe.hooks.sql import database_url, store_root
    from mlpipe.registry import Registry

    registry = Registry.from_url(database_url(config.REGISTRY_CONN_ID, config.default_registry_url()), create=False)
    try:
        with registry.engine.connect() as conn:
            before = migrations.current_revision(conn)
        reached = migrations.upgrade(registry.engine, args.revision, store_root=store_root)
    finally:
        registry.dispose()
    where = registry.engine.url.render_as_string(hide_password=True)
    change = "already at" if before == reached else f"{before or 'empty'} ->"
    print(f"registry {where}: {change} {reached}")
    return 0


def cmd_demo_seed(args: argparse.Namespace) -> int:
    from mlpipe import demo
    from mlpipe.datasets import seed_datasets

    until = None if args.all else args.until
    if args.target == "postgres":
        engine = _seed_engine(args.conn_id or config.SOURCE_CONN_ID)
        try:
            rows, created = demo.seed_flights_postgres(engine, force=args.force, until=until)
            datasets = seed_datasets(engine)
        finally:
            engine.dispose()
        where = f"{engine.url.render_as_string(hide_password=True)} (table flights, {rows:,} rows)"
    elif args.target == "s3":
        datasets = []  # diabetes and wine are SQL tables; an S3 source has none
        store = _seed_bucket(args.conn_id or config.STORE_CONN_ID, args.bucket)
        rows, days, kept = demo.seed_flights_s3(store, args.prefix, force=args.force, until=until)
        created = days > 0
        where = f"{store.uri(args.prefix)}/ ({rows:,} rows in {days} daily objects; {kept} days already there)"
    else:
        home = config.mlpipe_home()
        db, _, created = demo.seed_flights(home, force=args.force, until=until)
        rows, first, newest = demo.source_summary(home)
        where = f"{db} (table flights, {rows:,} rows, {first} .. {newest})"
        if not args.all:
            where += "\nappend the next days as new data with: python -m mlpipe demo feed --days N"
        datasets = seed_datasets(db)
    print(f"{'seeded' if created else 'already seeded'}: {where}")
    # The regression and multiclass pipelines' tables, beside the flights of a SQL source.
    for table, count, made in datasets:
        print(f"{'seeded' if made else 'already seeded'}: table {table} ({count:,} rows)")
    return 0


def _required_connection(conn_id: str, example: str) -> Any:
    from mlpipe.hooks.connections import get_connection

    conn = get_connection(conn_id)
    if conn is None:
        raise MlpipeError(f"connection {conn_id!r} is not defined: set AIRFLOW_CONN_{conn_id.upper()}='{example}'")
    return conn


def _seed_engine(conn_id: str) -> Any:
    """The PostgreSQL database of ``conn_id``; never the embedded SQLite default."""
    import sqlalchemy as sa

    from mlpipe.hooks.sql import sqlalchemy_url

    conn = _required_connection(conn_id, "postgresql://user:password@host:5432/database")
    try:
        return sa.create_engine(sqlalchemy_url(conn))
    except ValueError as exc:
        raise MlpipeError(str(exc)) from None


def _seed_bucket(conn_id: str, bucket: str | None) -> Any:
    """The whole bucket (no prefix) of the AWS connection ``conn_id``, as an S3Store."""
    from mlpipe.hooks.aws import s3_client
    from mlpipe.storage import S3Store

    conn = _required_connection(conn_id, "aws://KEY:SECRET@/?bucket=mlpipe&endpoint_url=http://minio:9000")
    extra = conn.extra_dejson or {}
    bucket = bucket or extra.get("bucket")
    if not bucket:
        raise MlpipeError(f"no bucket: pass --bucket, or set extra 'bucket' in connection {conn_id!r}")
    return S3Store(str(bucket), "", s3_client(extra.get("aws_conn_id") or conn_id))


def cmd_demo_feed(args: argparse.Namespace) -> int:
    from mlpipe.demo import feed_flights

    added, newest = feed_flights(config.mlpipe_home(), days=args.days)
    print(f"appended {added:,} flights; newest now {newest}" if added else f"nothing left to feed (newest {newest})")
    return 0


def cmd_demo_summary(args: argparse.Namespace) -> int:
    from mlpipe.summary import render_summary

    print(render_summary(args.pipeline, _store(), _registry(), run_id=args.run_id))
    return 0


def cmd_report_open(args: argparse.Namespace) -> int:
    from mlpipe.summary import report_locations

    found = report_locations(args.pipeline, _store(), _registry(), args.version)
    if args.json:
        _print_json(found)
        return 0
    print(f"{found['pipeline']} v{found['version']} (run {found['run_id']})")
    print(f"  evaluation report  {_location(found['evaluation_report'])}")
    if found["data_docs"]:
        print(f"  data docs          {_location(found['data_docs'])}")
    if found["drift_report"]:
        print(f"  drift report       {_location(found['drift_report'])}  (window {found['drift_window']})")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    import getpass

    from mlpipe.hooks.sql import source_engine
    from mlpipe.scaffold import new_pipeline
    from mlpipe.sources.columns import shown_path

    engine = source_engine(args.conn_id)
    try:
        drafted = new_pipeline(
            args.name,
            engine,
            target=args.target,
            table=args.table,
            query_file=args.query,
            task=args.task,
            time_column=args.time_column,
            conn_id=args.conn_id,
            owner=args.owner or getpass.getuser(),
            description=args.description,
            sample_rows=args.sample_rows,
            force=args.force,
        )
    finally:
        engine.dispose()
    plan = drafted.plan
    print(f"{args.name}: {plan.task_reason}; {plan.rows:,} rows sampled")
    print(f"  features    numeric {plan.numeric}, categorical {plan.categorical}, datetime {list(plan.datetime_parts)}")
    for s in plan.suggestions:
        print(f"  review      {s.column}: {s.reason} (commented out in the spec)")
    print(f"  split       {'time, by ' + plan.time_column if plan.time_column else 'random'}")
    for role, path in drafted.files.items():
        extra = f" ({drafted.suite_expectations} expectations)" if role == "suite" else ""
        print(f"  wrote       {shown_path(path)}{extra}")
    print(f"next: review the files, then  mlpipe check {args.name}  and  airflow dags test {args.name}_train")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from mlpipe.check import check_pipeline
    from mlpipe.hooks.source import open_source
    from mlpipe.spec import find_spec

    loaded = find_spec(args.name)
    with open_source(loaded.spec.source) as source:
        report = check_pipeline(loaded, source, rows=args.sample_rows)
    print(report.render())
    return 0 if report.ok else 1


def cmd_suite_draft(args: argparse.Namespace) -> int:
    import contextlib

    from mlpipe.check import draft_pipeline_suite
    from mlpipe.hooks.source import open_source
    from mlpipe.sources.columns import shown_path
    from mlpipe.spec import find_spec

    loaded = find_spec(args.name)
    out = Path(args.output) if args.output else loaded.suite_path
    if out.exists() and not args.force:
        raise MlpipeError(f"{out} exists already: pass --force to replace it (or --output another file)")
    with contextlib.ExitStack() as stack:
        engine = None
        if not args.from_snapshot:
            engine = stack.enter_context(open_source(loaded.spec.source))
        store = _store() if args.from_snapshot else None
        suite, drawn_from, rows = draft_pipeline_suite(
            loaded, engine=engine, store=store, from_snapshot=args.from_snapshot, rows=args.sample_rows
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(suite, indent=2) + "\n", encoding="utf-8")
    print(
        f"wrote {shown_path(out)}: {len(suite['expectations'])} expectations drafted from {rows:,} rows of {drawn_from}"
    )
    print(f"each expectation's notes say what it was derived from; review them, then: mlpipe check {args.name}")
    return 0


def _location(uri: str) -> str:
    """A local file's path (what a browser or ``open`` takes), any other URI as it is."""
    return uri.removeprefix("file://")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlpipe", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    reg = sub.add_parser("registry", help="model versions and champions").add_subparsers(dest="action", required=True)
    p = reg.add_parser("list", help="every model version of a pipeline")
    p.add_argument("pipeline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registry_list)
    p = reg.add_parser("show", help="one model version")
    p.add_argument("pipeline")
    p.add_argument("version", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registry_show)
    p = reg.add_parser("champion", help="the current champion (exit 1 when there is none)")
    p.add_argument("pipeline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registry_champion)
    p = reg.add_parser("history", help="the champion log: every promotion, oldest first")
    p.add_argument("pipeline")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registry_history)

    p = reg.add_parser("runs", help="the recorded runs of a pipeline, from the run index (oldest first)")
    p.add_argument("pipeline")
    p.add_argument("--last", type=int, default=None, metavar="N", help="only the newest N runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_registry_runs)
    p = reg.add_parser("reindex", help="rebuild a pipeline's run index from the artifact store (its source of truth)")
    p.add_argument("pipeline")
    p.set_defaults(func=cmd_registry_reindex)

    p = reg.add_parser(
        "rollback",
        help="make an earlier version champion again: appends to the champion log, emits the champion asset event",
    )
    p.add_argument("pipeline")
    p.add_argument("version", type=int, help="the registered version to go back to")
    p.add_argument("--reason", required=True, help="why (kept in the champion log)")
    p.add_argument("--actor", help="who asks (default: your login name, '(cli)')")
    p.set_defaults(func=cmd_registry_rollback)

    p = reg.add_parser("upgrade", help="migrate the registry database to the newest schema (safe to repeat)")
    p.add_argument("--revision", default="head", help="an Alembic revision of mlpipe.migrations (default: head)")
    p.set_defaults(func=cmd_registry_upgrade)

    report = sub.add_parser("report", help="reports of a model version").add_subparsers(dest="action", required=True)
    p = report.add_parser(
        "open", help="where the evaluation report (and Data Docs, drift report) of a version is (exit 1: none)"
    )
    p.add_argument("pipeline")
    p.add_argument("version", type=int, nargs="?", help="a model version (default: the champion)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_report_open)

    p = sub.add_parser(
        "new",
        help="draft a pipeline (spec, SQL, GX suite under include/) from a table or query and a target column",
    )
    p.add_argument("name", help="the pipeline's name: include/pipelines/NAME.yaml, DAG NAME_train")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--table", help="a table (or schema.table) of the source: every column is selected")
    what.add_argument("--query", type=Path, help="a SQL file whose result is the training data (copied)")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", choices=["binary", "multiclass", "regression"], help="default: from the target's values")
    p.add_argument(
        "--time-column", help="a timestamp column: time split, and the query reads rows before the run's :as_of"
    )
    p.add_argument(
        "--conn-id", default=config.SOURCE_CONN_ID, help="the source's Airflow Connection (default %(default)s)"
    )
    p.add_argument("--owner", help="the DAG's owner (default: your login name)")
    p.add_argument("--description", help="what the model predicts, in a sentence")
    p.add_argument(
        "--sample-rows", type=int, default=100_000, help="rows read to decide and draft (default %(default)s)"
    )
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_new)

    p = sub.add_parser(
        "check", help="dry run without a scheduler: spec, :as_of, the query on a sample, columns, the suite (exit 1)"
    )
    p.add_argument("name")
    p.add_argument("--sample-rows", type=int, default=100_000, help="rows of the query checked (default %(default)s)")
    p.set_defaults(func=cmd_check)

    suite = sub.add_parser("suite", help="GX expectation suites").add_subparsers(dest="action", required=True)
    p = suite.add_parser("draft", help="profile the query's result (or a run's snapshot) and write a GX suite")
    p.add_argument("name")
    p.add_argument("--from-snapshot", metavar="RUN", help="the snapshot of this run id of NAME_train, not the query")
    p.add_argument("--sample-rows", type=int, default=100_000, help="rows of the query profiled (default %(default)s)")
    p.add_argument("--output", help="write here instead of the spec's validation.suite file")
    p.add_argument("--force", action="store_true", help="replace an existing suite file")
    p.set_defaults(func=cmd_suite_draft)

    demo = sub.add_parser("demo", help="demo data and summary").add_subparsers(dest="action", required=True)
    p = demo.add_parser(
        "seed",
        help="load the 2013 NYC flights (January-February), diabetes, wine and breast_cancer into the source",
    )
    p.add_argument("pipeline", nargs="?", default="flights_delay", choices=["flights_delay"])
    p.add_argument("--force", action="store_true", help="rewrite the table even if it exists (drops fed rows)")
    first = p.add_mutually_exclusive_group()
    first.add_argument(
        "--until", metavar="YYYY-MM-DD", default=SEED_UNTIL, help=f"flights before this day (default {SEED_UNTIL})"
    )
    first.add_argument("--all", action="store_true", help="the whole year, all 336,776 flights")
    p.add_argument(
        "--target",
        choices=["sqlite", "postgres", "s3"],
        default="sqlite",
        help="sqlite: MLPIPE_HOME/source.db; postgres: table flights through the source connection; "
        "s3: one Parquet object per day, <prefix>/date=YYYY-MM-DD/flights.parquet, through an AWS connection",
    )
    p.add_argument(
        "--conn-id",
        help=f"the Connection to write through (default: {config.SOURCE_CONN_ID} for postgres, "
        f"{config.STORE_CONN_ID} for s3)",
    )
    p.add_argument("--bucket", help="s3: the bucket (default: the connection's extra 'bucket')")
    p.add_argument("--prefix", default="sources/flights", help="s3: key prefix of the daily objects")
    p.set_defaults(func=cmd_demo_seed)
    p = demo.add_parser("feed", help="append the next days of flights, as new data would arrive")
    p.add_argument("pipeline", nargs="?", default="flights_delay", choices=["flights_delay"])
    p.add_argument("--days", type=int, default=1)
    p.set_defaults(func=cmd_demo_feed)
    p = demo.add_parser("summary", help="what the latest training run did, in plain words")
    p.add_argument("pipeline", nargs="?", default="flights_delay")
    p.add_argument("--run-id", help="a specific run (default: the latest)")
    p.set_defaults(func=cmd_demo_summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    config.checkout_environment()
    args = build_parser().parse_args(argv)
    # Keep stdout for the answer (``--json`` is parsed by scripts): no info logs from lookups.
    for name in ("mlpipe", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except MlpipeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
