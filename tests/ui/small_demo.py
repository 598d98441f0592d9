"""Train the demo pipeline on a small slice of the flights, as the browser test's starting point.

Run as a script in the environment it should fill (AIRFLOW_HOME, MLPIPE_HOME, ...): it seeds
``MLPIPE_HOME/source.db`` with the flights of 2013 before ``--until``, runs ``flights_delay_train``
with ``dag.test()``, feeds ``--feed-days`` more days and trains again, then runs
``flights_delay_monitor`` once. The real DAGs, operators and stages, in one process (so the
imports are paid once); each DAG run is also recorded in the Airflow metadata DB, with its XComs
(extra links included), as ``airflow dags test`` would. Prints one JSON line with the run ids.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--until", default="2013-01-22")
    parser.add_argument("--feed-days", type=int, default=7)
    args = parser.parse_args()

    from airflow.dag_processing.dagbag import DagBag

    from mlpipe.demo import feed_flights, seed_flights

    started = time.perf_counter()
    home = Path(os.environ["MLPIPE_HOME"])
    seed_flights(home, until=args.until)
    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        print(json.dumps({"import_errors": {k: str(v) for k, v in bag.import_errors.items()}}))
        return 1
    runs = {}
    first = bag.dags["flights_delay_train"].test()
    runs["train_1"] = (first.run_id, str(first.state))
    feed_flights(home, days=args.feed_days)
    second = bag.dags["flights_delay_train"].test()
    runs["train_2"] = (second.run_id, str(second.state))
    monitor = bag.dags["flights_delay_monitor"].test()
    runs["monitor"] = (monitor.run_id, str(monitor.state))
    print(json.dumps({"runs": runs, "seconds": round(time.perf_counter() - started, 1)}))
    return 0 if all(state.endswith("success") for _, state in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
