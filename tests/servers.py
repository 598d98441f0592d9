"""Helpers of the tests that start real Airflow servers on loopback: free ports, process trees, health waits."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import closing, suppress
from pathlib import Path


def free_port() -> int:
    with closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (task supervisors move their children to groups of their own)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def send_signal(pid: int, sig: int, *, group: bool) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig) if group else os.kill(pid, sig)


def stop_tree(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM ``proc``'s process group (it was started with ``start_new_session``), then SIGKILL what is left."""
    tree = descendants(proc.pid)
    send_signal(proc.pid, signal.SIGTERM, group=True)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    send_signal(proc.pid, signal.SIGKILL, group=True)
    for pid in tree:
        send_signal(pid, signal.SIGKILL, group=False)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float) -> float:
    """Poll ``url`` until it answers 200; the seconds it took. Raises if ``proc`` dies or time runs out."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before {url} answered")
        with (
            suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(url, timeout=5) as r,
        ):
            if r.status == 200:
                return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{url} did not answer 200 within {timeout:.0f} s")
        time.sleep(0.5)
