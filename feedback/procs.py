"""Child processes, one way everywhere: free ports, waiting for a port or URL, starting a
child in a process group of its own and stopping that whole group.

Used by `tao up` and the broker launcher (deploy/), the gateway's vLLM (serving/vllm.py), the
worker's cycle process (trainer/worker.py) and the tests, so all start and stop things alike.
In feedback/ because serving and trainer may both import it and never each other.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode} before listening on {port}")
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def wait_http_ok(url: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what or proc.args!r} exited with {proc.returncode} before {url} was ready")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as e:
            last = type(e).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{what or url} not ready within {timeout:.0f}s (last: {last})")


def spawn(cmd: list[str], env: dict[str, str] | None = None, log_path: str | None = None) -> subprocess.Popen:
    """Start a child in its own process group, so stopping it also stops its children."""
    out = open(log_path, "ab") if log_path else None
    return subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT if out else None,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left after `timeout`
    (a group outlives its leader: vLLM's engine workers, a cycle's compilers). The child must
    lead its group (started by `spawn`, or with start_new_session=True)."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # reap grandchildren a dead parent left
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
