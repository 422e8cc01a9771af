"""An Alertmanager webhook receiver for tests: a real HTTP server on 127.0.0.1 that answers
each POST with the next status of `answers` (then 200) and keeps every body.

    r = Receiver(); r.answers = [503]        # refuse the first delivery
    ... r.url ...; r.delivered() == [("BacklogSpike-3fa2...", "firing"), ...]; r.close()
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Answers each POST with the next status of `answers` (then 200), keeping the bodies."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.seen: list[tuple[int, dict[str, Any]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = receiver.answers.pop(0) if receiver.answers else 200
                receiver.seen.append((status, body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The bodies the receiver took (answered 200), in order."""
        return [b for s, b in list(self.seen) if s == 200]

    def delivered(self) -> list[tuple[str, str]]:
        return [(b["alerts"][0]["fingerprint"], b["status"]) for s, b in self.seen if s == 200]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
