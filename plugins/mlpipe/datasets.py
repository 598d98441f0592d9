"""Small datasets scikit-learn ships, seeded beside the demo flights: the regression and multiclass pipelines,
and a table for your first model.

* ``diabetes`` (:func:`sklearn.datasets.load_diabetes`, unscaled): 442 patients, ten baseline
  measurements, and ``progression``, a quantitative measure of the disease one year later
  (include/pipelines/diabetes.yaml, a regression).
* ``wine`` (:func:`sklearn.datasets.load_wine`): 178 wines, thirteen chemical measurements, and
  ``cultivar``, which of three cultivars the wine comes from (include/pipelines/wine.yaml, multiclass).
* ``breast_cancer`` (:func:`sklearn.datasets.load_breast_cancer`): 569 breast masses, thirty
  measurements of their cell nuclei (column names in snake case), and ``diagnosis``, ``malignant``
  or ``benign``. No pipeline uses it: docs/first-model.md drafts one with ``mlpipe new``.

Each table gets an integer ``id`` (the key scoring uses) and a ``recorded_at`` timestamp (one row a
day from 2013-01-01, so the queries bind ``:as_of`` like every mlpipe query). Nothing is downloaded:
both datasets are files inside the scikit-learn package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DATASET_ROWS = {"diabetes": 442, "wine": 178, "breast_cancer": 569}


def dataset_frame(name: str) -> Any:
    """The table ``name`` as seeded: id, recorded_at, the features and the target."""
    import pandas as pd
    from sklearn import datasets

    if name == "diabetes":
        bunch = datasets.load_diabetes(as_frame=True, scaled=False)
        frame = bunch.frame.rename(columns={"target": "progression"})
    elif name == "wine":
        bunch = datasets.load_wine(as_frame=True)
        frame = bunch.frame.rename(columns={"od280/od315_of_diluted_wines": "od280_od315"})
        frame["cultivar"] = bunch.target_names[frame.pop("target")]
    elif name == "breast_cancer":
        bunch = datasets.load_breast_cancer(as_frame=True)
        frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
        frame["diagnosis"] = bunch.target_names[frame.pop("target")]
    else:
        raise ValueError(f"no bundled dataset {name!r}; known: {sorted(DATASET_ROWS)}")
    days = pd.to_timedelta(range(len(frame)), unit="D")
    stamps = (pd.Timestamp("2013-01-01") + days).strftime("%Y-%m-%d %H:%M:%S")
    frame.insert(0, "recorded_at", stamps)
    frame.insert(0, "id", range(1, len(frame) + 1))
    return frame


def _rows(conn: Any, table: str) -> int | None:
    import sqlalchemy as sa

    if not sa.inspect(conn).has_table(table):
        return None
    return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()


def seed_datasets(target: Path | Any) -> list[tuple[str, int, bool]]:
    """Create the ``diabetes``, ``wine`` and ``breast_cancer`` tables unless complete already, in the SQLite file
    ``target`` (a path) or the database of ``target`` (a SQLAlchemy engine: PostgreSQL, say).

    Returns (table, rows, created) for each. A table is replaced in one transaction: complete or absent.
    """
    import sqlalchemy as sa

    engine = target
    if isinstance(target, Path):
        target.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(f"sqlite:///{target}")
    out = []
    try:
        for name, expected in DATASET_ROWS.items():
            with engine.connect() as conn:
                rows = _rows(conn, name)
            if rows == expected:
                out.append((name, expected, False))
                continue
            frame = dataset_frame(name)
            with engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
                frame.to_sql(name, conn, index=False)
                conn.execute(sa.text(f"CREATE UNIQUE INDEX ix_{name}_id ON {name} (id)"))
            out.append((name, len(frame), True))
    finally:
        if engine is not target:
            engine.dispose()
    return out
