"""Running the server: the listening socket, bound before any model is loaded, and uvicorn on
it with this package's limits and logging; ``workers > 1`` builds the app in each process from
a picklable factory (serve/factory.py), which imports serve/app.py only there."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Any

from torchkeel.errors import KeelError
from torchkeel.serve.factory import AppFactory
from torchkeel.serve.limits import READ_TIMEOUT_S


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound to ``host:port`` as uvicorn binds one (its workers share it),
    before any model is loaded; a KeelError naming the port when it is taken."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise KeelError(f"port {port} is in use: stop the server on it, or choose another with --port") from None
        raise KeelError(f"cannot listen on {host}:{port} ({e.strerror or e}): check --host and --port") from None
    sock.set_inheritable(True)
    return sock


def serve(
    run_dir: Path,
    sock: socket.socket,
    workers: int = 1,
    read_timeout: float = READ_TIMEOUT_S,
    **options: Any,
) -> None:
    """Run uvicorn on ``sock`` (from :func:`listen`); with ``workers > 1`` each process builds
    its own app (and model)."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from torchkeel.serve.limits import TimedH11Protocol

    options.setdefault("threads", max(1, (os.cpu_count() or 1) // workers))
    factory = AppFactory(run_dir, {**options, "read_timeout": read_timeout})
    config = uvicorn.Config(
        factory() if workers == 1 else factory,
        factory=workers > 1,  # a picklable factory rather than uvicorn's import string
        workers=workers,
        http=TimedH11Protocol,
        access_log=False,
        log_level="info",
        log_config=_log_config(),
        timeout_worker_healthcheck=30,
    )
    config.read_timeout = read_timeout  # type: ignore[attr-defined]  # TimedH11Protocol's header limit
    if workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: uvicorn has shut down cleanly
        uvicorn.Server(config).run(sockets=[sock])


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, with this package's server log (disconnects, timeouts) beside it."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["torchkeel.serve"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config
