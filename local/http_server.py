"""A threading HTTP server whose ``close()`` also ends the keep-alive connections it is serving.

Why: ``ThreadingHTTPServer.shutdown()`` only stops accepting. A handler thread on an HTTP/1.1 keep-alive
connection opened before keeps reading requests from it, so a "stopped" local API (or Telegram stand-in) still
answers old clients, and an outage test would see the service up. Tracking each accepted socket lets ``close()``
shut them down, which ends the handler's read with EOF.
"""
from __future__ import annotations

import socket
import threading
from http.server import ThreadingHTTPServer
from typing import Any


class ClosingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args: Any, **kwargs: Any):
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close(self) -> None:
        """Stop accepting (the listener closes, so new connections are refused) and end every open one."""
        self.shutdown()
        self.server_close()
        with self._connections_lock:
            open_connections = list(self._connections)
        for connection in open_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:  # the client or the handler closed it meanwhile
                pass
