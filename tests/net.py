"""Network helpers for tests: loopback only."""

from __future__ import annotations

import socket


def closed_port() -> int:
    """A 127.0.0.1 port that was free a moment ago: nothing listens there."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RangeServer:
    """A minimal HTTP/1.1 file server on 127.0.0.1 with byte ranges (what FFmpeg's http
    client uses). ``files`` maps URL paths to bytes; ``bytes_sent`` counts what each path
    sent, so tests can tell how often a file was fetched."""

    def __init__(self, data: bytes | None = None, *, files: dict[str, bytes] | None = None):
        import contextlib
        import http.server
        import threading

        self.files = dict(files or {})
        self.default = data
        self.bytes_sent: dict[str, int] = {}
        self.requests: list[str] = []
        server_state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?", 1)[0]
                payload = server_state.files.get(path, server_state.default)
                server_state.requests.append(path)
                if payload is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                start, end = 0, len(payload) - 1
                if rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a or 0)
                    end = int(b) if b else end
                body = payload[start : end + 1]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(payload)}")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)
                    server_state.bytes_sent[path] = server_state.bytes_sent.get(path, 0) + len(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
