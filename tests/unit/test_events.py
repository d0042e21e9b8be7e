"""The driver's event server takes only bounded, token-bearing JSON lines (a real TCP server on 127.0.0.1)."""

from __future__ import annotations

import socket

from dltool.train.events import MAX_EVENT_BYTES, EventClient, EventServer


def test_an_endless_line_ends_its_connection_and_workers_still_get_through():
    with EventServer("127.0.0.1") as server:
        with socket.create_connection((server.host, server.port), timeout=10) as hostile:
            hostile.settimeout(10)
            try:  # more than one event may hold, with no newline: the server must hang up, not buffer it all
                for _ in range(4):
                    hostile.sendall(b"x" * MAX_EVENT_BYTES)
            except OSError:
                pass  # reset by the server while sending: as good as the empty read below
            else:
                assert hostile.recv(1) == b""  # closed by the server
        stray = EventClient({"host": server.host, "port": server.port, "token": "not-the-token"}, rank=1)
        stray.send("step", epoch=1)
        stray.close()
        worker = EventClient(server.address, rank=0)
        worker.send("epoch", epoch=3)
        worker.close()
        event = server.events.get(timeout=10)
        assert (event["type"], event["rank"], event["epoch"]) == ("epoch", 0, 3)
        assert server.events.empty()
