"""Helpers of the tests that start real Airflow servers on loopback: free ports, process trees, health waits,
and a TCP proxy that takes a service away and brings it back."""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import closing, suppress
from pathlib import Path
from typing import Any


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


class TcpProxy:
    """A TCP forwarder on a free loopback port to ``target``; :meth:`down` refuses connections (and cuts
    the open ones) as a service that went away, :meth:`up` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=f"tcp-proxy-{self.port}", daemon=True)
        self.up()
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def up(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.setblocking(False)
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, "accept")
        self._wake()

    def down(self) -> None:
        with self._lock:
            if self._listener is not None:
                self._selector.unregister(self._listener)
                self._listener.close()
                self._listener = None
            for pair in list(self._pairs):
                self._drop(pair)
        self._wake()

    def close(self) -> None:
        self.down()
        self._closed = True
        self._wake()
        self._thread.join(timeout=5)

    def _wake(self) -> None:
        with suppress(OSError):
            self._wake_w.send(b"x")

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        self._pairs.discard(pair)
        for sock in pair:
            with suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()

    def _loop(self) -> None:
        while not self._closed:
            for key, _ in self._selector.select(timeout=0.5):
                with self._lock:
                    if key.fileobj is self._wake_r:
                        with suppress(OSError):
                            self._wake_r.recv(4096)
                    elif key.data == "accept":
                        self._accept()
                    elif key.data is not None:
                        self._pump(key.fileobj, *key.data)

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            server = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()
            return
        pair = (client, server)
        self._pairs.add(pair)
        self._selector.register(client, selectors.EVENT_READ, (server, pair))
        self._selector.register(server, selectors.EVENT_READ, (client, pair))

    def _pump(self, source: Any, dest: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        if pair not in self._pairs:
            return
        try:
            data = source.recv(65536)
            if data:
                dest.setblocking(True)
                dest.sendall(data)
                return
        except OSError:
            pass
        self._drop(pair)
