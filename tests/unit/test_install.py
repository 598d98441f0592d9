"""The project installs into a venv as `make setup` does it: ``mlpipe``, ``python -m mlpipe`` without activation."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The command of the Makefile's sync recipe (after `uv pip sync`), without the Makefile's paths.
INSTALL = ["pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--editable"]


def bare_env(tmp_path: Path) -> dict[str, str]:
    """What `env -i` leaves: no PYTHONPATH, no AIRFLOW_HOME, no venv on PATH."""
    return {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def test_makefile_installs_the_project_after_every_sync() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("$(SYNC_STAMP): requirements.lock pyproject.toml")[1].split("\n\n")[0]
    sync, install = recipe.index("pip sync"), recipe.index(" ".join(INSTALL))
    assert sync < install, "uv pip sync removes unlisted packages: the project is installed after it"


def test_a_fresh_venv_gets_the_console_script(tmp_path: Path) -> None:
    """A new venv (its dependencies layered from this one, as the lock would give them) and the Makefile's install."""
    uv = Path(sys.executable).with_name("uv")
    if not uv.exists():
        pytest.fail(f"uv is missing from {uv.parent}: run make setup")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    subprocess.run(
        [str(uv), *INSTALL, str(REPO), "--python", str(venv / "bin" / "python")],
        check=True,
        timeout=120,
        env={**os.environ, "UV_OFFLINE": "1"},  # the lock's setuptools builds it: nothing is downloaded
    )

    for cmd in ([str(venv / "bin" / "mlpipe"), "--help"], [str(venv / "bin" / "python"), "-m", "mlpipe", "--help"]):
        done = subprocess.run(cmd, env=bare_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: mlpipe ") and "registry" in done.stdout


def test_the_checkout_venv_runs_mlpipe_without_activation(tmp_path: Path) -> None:
    script = REPO / ".venv" / "bin" / "mlpipe"
    if not script.exists():
        pytest.fail(f"{script} is missing: make setup installs the project into .venv")
    done = subprocess.run(
        [str(script), "--help"], env=bare_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("usage: mlpipe "), done.stdout + done.stderr
    assert not (tmp_path / "airflow").exists(), "no ~/airflow: the checkout's .airflow/ is used"


def _stale_or_missing_bytecode(module_file: Path) -> bool:
    """True when Python would compile ``module_file`` from source: no pyc beside it, or one for another source."""
    cached = Path(importlib.util.cache_from_source(str(module_file)))
    try:
        header = cached.read_bytes()[:16]
    except OSError:
        return True
    stat = module_file.stat()
    flags = int.from_bytes(header[4:8], "little")
    if flags & 1:  # a hash-based pyc: checked against the source's hash, not compared here
        return False
    mtime, size = int.from_bytes(header[8:12], "little"), int.from_bytes(header[12:16], "little")
    return header[:4] != importlib.util.MAGIC_NUMBER or (mtime, size) != (int(stat.st_mtime) & 0xFFFFFFFF, stat.st_size)


def test_the_checkout_venv_imports_its_packages_from_bytecode() -> None:
    """Where PYTHONDONTWRITEBYTECODE is set nothing is cached at import: `make setup` compiles the packages."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    if not site.is_relative_to(REPO / ".venv"):
        pytest.fail(f"the tests run outside the checkout's venv ({site}): run them with make test")
    code = "import airflow.sdk, great_expectations, pandas, sklearn.ensemble, sklearn.linear_model, sqlalchemy"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}; import sys; print('\\n'.join(str(getattr(m, '__file__', None)) "
            "for m in list(sys.modules.values())))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    files = [Path(f) for f in done.stdout.split() if f.endswith(".py") and Path(f).resolve().is_relative_to(site)]
    assert len(files) > 1000, "the imports above load over a thousand modules from site-packages"
    compiled_at_import = [f for f in files if _stale_or_missing_bytecode(f)]
    assert compiled_at_import == [], (
        f"{len(compiled_at_import)} modules compiled from source, e.g. {compiled_at_import[:5]}"
    )
