# The Airflow image the compose stack runs: the official image plus mlpipe's locked dependencies.
# DAGs, plugins and include/ are mounted by docker-compose.yaml, not copied, so editing them needs no rebuild.
FROM apache/airflow:3.3.2-python3.11

ARG UV_VERSION=0.13.9

# mysqlclient (the MySQL provider's driver) builds from source against libmariadb-dev.
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libmariadb-dev pkg-config gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

USER airflow
COPY --chown=airflow:0 requirements.lock /tmp/requirements.lock
# Same pins as `make setup`; Airflow itself is already at the locked version, so only the rest is added.
# Compiled to bytecode here (uv does not by default): otherwise the first tasks of every new container
# compile pandas, scikit-learn and GX from source (docs/benchmarks.md, section 17).
RUN pip install --no-cache-dir "uv==${UV_VERSION}" \
 && uv pip install --no-cache --compile-bytecode --python "$(command -v python)" -r /tmp/requirements.lock \
 && rm /tmp/requirements.lock

# Named volumes mounted here inherit these directories' owner (airflow, group 0, group-writable), so
# containers running as another AIRFLOW_UID in group 0 can write to them too: the MLPIPE_HOME of
# the embedded default and the UI password file airflow-init writes.
RUN mkdir -p /opt/airflow/mlpipe /opt/airflow/auth && chmod 0775 /opt/airflow/mlpipe /opt/airflow/auth

# The `mlpipe` command, as `make setup` gives it locally: the package is mounted (plugins/), not
# installed, so the script runs it from PYTHONPATH.
RUN mkdir -p /home/airflow/.local/bin \
 && printf '#!/bin/sh\nexec python -m mlpipe "$@"\n' > /home/airflow/.local/bin/mlpipe \
 && chmod 0755 /home/airflow/.local/bin/mlpipe

ENV PYTHONPATH=/opt/airflow/plugins \
    MLPIPE_HOME=/opt/airflow/mlpipe \
    MLPIPE_INCLUDE=/opt/airflow/include
