"""Free TCP ports on loopback, for servers a test starts itself."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picked it); nothing listens there after."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct free ports: all held open at once while picked, so none repeats."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def wait_for_port(
    port: int, within: float = 20, server: subprocess.Popen[bytes] | None = None
) -> None:
    """Block until something accepts connections on 127.0.0.1:`port` (a server started in the
    background); raises if `server` exits first or nothing listens within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise RuntimeError(f"{server.args[0]} exited with {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)  # polling the port, with a deadline
    raise TimeoutError(f"nothing listening on {port} after {within}s")
