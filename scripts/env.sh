# shellcheck shell=sh
# The environment every Airflow and mlpipe command of this checkout runs in; the one place it is set.
#
# Sourced (never executed) by the Makefile recipes and by .venv/bin/activate (`make setup` appends a
# line that sources it), so `make demo` and a user's `airflow dags test ...` see the same settings.
# POSIX sh: it also works from dash, bash and zsh.
#
# Airflow is configured through AIRFLOW__SECTION__KEY variables rather than by editing airflow.cfg:
# Airflow writes a default airflow.cfg into AIRFLOW_HOME on first use, and environment variables win
# over it, so deleting .airflow/ never loses a setting. (`make setup` also points that file's
# dags_folder and plugins_folder here, for processes that get only AIRFLOW_HOME.)

# The repository root is this file's parent directory. bash and zsh can tell where a sourced file
# is; plain sh cannot, so there the caller names it in MLPIPE_REPO_ROOT (the activate hook does),
# and failing that the current directory is used when it holds this file.
_mlpipe_self=""
if [ -n "${BASH_SOURCE:-}" ]; then
    _mlpipe_self=$BASH_SOURCE
elif [ -n "${ZSH_VERSION:-}" ]; then
    eval '_mlpipe_self=${(%):-%x}'
fi
if [ -n "$_mlpipe_self" ] && [ -f "$_mlpipe_self" ]; then
    _mlpipe_root=$(CDPATH='' cd -- "$(dirname -- "$_mlpipe_self")/.." && pwd -P)
elif [ -n "${MLPIPE_REPO_ROOT:-}" ] && [ -f "$MLPIPE_REPO_ROOT/scripts/env.sh" ]; then
    _mlpipe_root=$(CDPATH='' cd -- "$MLPIPE_REPO_ROOT" && pwd -P)
elif [ -f "./scripts/env.sh" ]; then
    _mlpipe_root=$(pwd -P)
else
    echo "scripts/env.sh: cannot tell where the mlpipe checkout is; set MLPIPE_REPO_ROOT" >&2
    _mlpipe_root=""
fi

if [ -n "$_mlpipe_root" ]; then
    # Always point at this checkout, even when AIRFLOW_HOME/MLPIPE_HOME are already set: a value
    # left over from another project or another clone (~/airflow, a second worktree) would make
    # `make demo` run this repo's DAGs against someone else's metadata DB and artifacts without
    # a word. MLPIPE_KEEP_ENV=1 keeps values the caller set on purpose (a temporary home for a
    # test or benchmark, a deployment) and fills in only what is missing.
    if [ "${MLPIPE_KEEP_ENV:-}" = "1" ]; then
        AIRFLOW_HOME=${AIRFLOW_HOME:-$_mlpipe_root/.airflow}
        MLPIPE_HOME=${MLPIPE_HOME:-$_mlpipe_root/.mlpipe}
        AIRFLOW__CORE__DAGS_FOLDER=${AIRFLOW__CORE__DAGS_FOLDER:-$_mlpipe_root/dags}
        AIRFLOW__CORE__PLUGINS_FOLDER=${AIRFLOW__CORE__PLUGINS_FOLDER:-$_mlpipe_root/plugins}
        AIRFLOW__CORE__LOAD_EXAMPLES=${AIRFLOW__CORE__LOAD_EXAMPLES:-False}
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=${AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION:-True}
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}
    else
        AIRFLOW_HOME=$_mlpipe_root/.airflow
        MLPIPE_HOME=$_mlpipe_root/.mlpipe
        AIRFLOW__CORE__DAGS_FOLDER=$_mlpipe_root/dags
        AIRFLOW__CORE__PLUGINS_FOLDER=$_mlpipe_root/plugins
        AIRFLOW__CORE__LOAD_EXAMPLES=False
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
        # One admin user; Airflow generates its password (see `make ui`).
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=admin:admin
    fi
    export AIRFLOW_HOME MLPIPE_HOME AIRFLOW__CORE__DAGS_FOLDER AIRFLOW__CORE__PLUGINS_FOLDER \
        AIRFLOW__CORE__LOAD_EXAMPLES AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION \
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS

    # One port setting, AIRFLOW__API__PORT (default 8080), and every URL Airflow needs derived from
    # it: the UI's base URL and the execution API that task supervisors (the workers of `airflow
    # standalone`, `make ui`) call to start, heartbeat and finish tasks. Airflow derives the latter
    # from the base URL, or 8080 without one, so a UI on another port alone would leave every task
    # failing with "Connection refused". Derived on every sourcing (the port may change between
    # commands); MLPIPE_KEEP_ENV=1 keeps URLs the caller set (a deployment with its own host names).
    _mlpipe_port=${AIRFLOW__API__PORT:-8080}
    if [ "${MLPIPE_KEEP_ENV:-}" = "1" ]; then
        AIRFLOW__API__BASE_URL=${AIRFLOW__API__BASE_URL:-http://localhost:$_mlpipe_port}
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-$AIRFLOW__API__BASE_URL/execution/}
    else
        AIRFLOW__API__BASE_URL=http://localhost:$_mlpipe_port
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=$AIRFLOW__API__BASE_URL/execution/
    fi
    export AIRFLOW__API__BASE_URL AIRFLOW__CORE__EXECUTION_API_SERVER_URL
    unset _mlpipe_port

    # plugins/ on sys.path so `python -m mlpipe` and `import mlpipe` work without installing the
    # package. Prepended once: sourcing this file again does not grow PYTHONPATH.
    case ":${PYTHONPATH:-}:" in
        *":$_mlpipe_root/plugins:"*) ;;
        *) PYTHONPATH=$_mlpipe_root/plugins${PYTHONPATH:+:$PYTHONPATH} ;;
    esac
    export PYTHONPATH
fi

unset _mlpipe_self _mlpipe_root
