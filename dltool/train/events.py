"""Progress and failure events from training workers to the driver, as JSON lines over TCP.

The driver listens on its Spark host; every worker connects once and sends
events (the chief: progress; any worker: its failure with the last output
lines). A random token keeps stray connections out of the stream.
"""

from __future__ import annotations

import json
import queue
import secrets
import socket
import socketserver
import threading
import time
from typing import Self


MAX_EVENT_BYTES = 1 << 20  # one event line; a longer one (or one that is not JSON) ends its connection


class EventServer:
    """Collects worker events into a queue; use as a context manager on the driver."""

    def __init__(self, host: str):
        self.token = secrets.token_hex(16)
        self.events: queue.Queue[dict] = queue.Queue()
        token, events = self.token, self.events

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    raw = self.rfile.readline(MAX_EVENT_BYTES + 1)  # bounded: a stray client cannot fill memory
                    if not raw or len(raw) > MAX_EVENT_BYTES:
                        return
                    try:
                        event = json.loads(raw)
                    except ValueError:
                        return
                    if event.pop("token", None) != token:
                        return
                    events.put(event)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server((host, 0), Handler)
        self.host = host
        self.port = self._server.server_address[1]
        # shutdown() waits for the loop's next poll: at the default 0.5 s that was 0.25-0.5 s at the end of every run
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="dltool-events", daemon=True)  # fmt: skip

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def address(self) -> dict:
        return {"host": self.host, "port": self.port, "token": self.token}


class EventClient:
    """A worker's connection to the driver; sending never raises (progress is best effort)."""

    def __init__(self, address: dict | None, rank: int, timeout: float = 10.0):
        self.rank = rank
        self._started = time.monotonic()
        self._token = address["token"] if address else None
        self._sock = None
        self._lock = threading.Lock()  # the worker's watchdog thread may report while the loop sends progress
        if address:
            try:
                self._sock = socket.create_connection((address["host"], address["port"]), timeout=timeout)
            except OSError:
                self._sock = None

    def send(self, type_: str, **fields) -> None:
        if self._sock is None:
            return
        uptime = round(time.monotonic() - self._started, 3)  # seconds since the worker started: start-up costs
        line = json.dumps({"token": self._token, "type": type_, "rank": self.rank, "uptime": uptime, **fields}) + "\n"
        with self._lock:
            try:
                self._sock.sendall(line.encode())
            except (OSError, AttributeError):  # AttributeError: closed by another thread meanwhile
                self._sock = None

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
