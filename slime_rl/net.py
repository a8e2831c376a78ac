"""Loopback helpers: free ports and waiting for a listener."""

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


def write_pid(run_dir, name: str, pid: int | None = None) -> None:
    """Record a component's PID in RUN_DIR/pids/NAME (for operators and fault-injection tests)."""
    import os
    from pathlib import Path

    d = Path(run_dir) / "pids"
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(str(pid or os.getpid()))
