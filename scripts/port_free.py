"""Exit 1 with a clear message when the API server's port is taken: `make ui` runs it before `airflow standalone`.

Usage: python scripts/port_free.py PORT
"""

from __future__ import annotations

import socket
import sys


def port_taken(port: int) -> str | None:
    """Why ``port`` cannot be served on (all interfaces, as the API server binds), or None when it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python scripts/port_free.py PORT", file=sys.stderr)
        return 2
    port = int(argv[0])
    reason = port_taken(port)
    if reason is None:
        return 0
    other = port + 10000 if port < 55535 else 18080
    print(
        f"error: port {port} is taken ({reason}): another Airflow, or another program, serves on it.\n"
        f"Stop it, or choose a free port for the UI and the execution API, e.g.:  AIRFLOW__API__PORT={other} make ui",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
