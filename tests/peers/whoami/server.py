#!/usr/bin/env python3
"""A small who-am-i service for authgate's tests (ECMWF API style), Python stdlib only.

It listens on 127.0.0.1 (port from argv[1], 0 for a free one; with argv[2] and argv[3], a
PEM certificate and key, over TLS), prints `listening <port>` on
stdout, and answers `/who-am-i` (any method) from a table of tokens that the test sets with
`POST /_tokens` (a JSON object: token -> {"status": int, "body": object or string,
"delay": seconds}). The token is read from the `token` query parameter, the `X-ECMWF-Key`
header or `Authorization: Bearer`. A token not in the table gets 401. Every request to
`/who-am-i` is recorded (method, raw path, query parameters, headers) and returned by
`GET /_requests`.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TOKENS = {}
REQUESTS = []
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if split.path == "/_tokens" and self.command == "POST":
            with LOCK:
                TOKENS.update(json.loads(raw))
            return self.answer(200, {"ok": True})
        if split.path == "/_requests":
            with LOCK:
                return self.answer(200, list(REQUESTS))
        if split.path != "/who-am-i":
            return self.answer(404, {"error": "not found"})
        query = parse_qs(split.query, keep_blank_values=True)
        with LOCK:
            REQUESTS.append({
                "method": self.command,
                "path": self.path,
                "query": query,
                "headers": {k.lower(): v for k, v in self.headers.items()},
            })
        token = None
        if "token" in query:
            token = query["token"][0]
        elif self.headers.get("X-ECMWF-Key"):
            token = self.headers["X-ECMWF-Key"]
        elif (self.headers.get("Authorization") or "").startswith("Bearer "):
            token = self.headers["Authorization"][len("Bearer "):]
        with LOCK:
            entry = TOKENS.get(token)
        if entry is None:
            return self.answer(401, {"error": "invalid token"})
        time.sleep(entry.get("delay", 0))
        body = entry.get("body", {})
        if isinstance(body, str):
            body = body.encode()
        return self.answer(entry.get("status", 200), body)

    do_GET = handle_any
    do_POST = handle_any


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    if len(sys.argv) > 3:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("listening", server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
