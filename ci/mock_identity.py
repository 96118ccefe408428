#!/usr/bin/env python3
"""A loopback stand-in for IMDS and a downstream API, for ci/promtool.sh.

GET /metadata/identity/oauth2/token (with `Metadata: true`) answers an IMDS-shaped token for
the requested resource. Paths under /open are a plain backend: 200. Every other path is the
downstream API: 200 when the request carries `Authorization: Bearer ci-token`, else 401. Prints its port on stdout, then serves until
killed.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOKEN = "ci-token"


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        url = urlparse(self.path)
        if url.path == "/metadata/identity/oauth2/token":
            if self.headers.get("Metadata") != "true":
                return self.reply(400, {"error": "invalid_request", "error_description": "Required metadata header not specified"})
            resource = parse_qs(url.query).get("resource", [""])[0]
            now = int(time.time())
            return self.reply(200, {
                "access_token": TOKEN, "token_type": "Bearer", "resource": resource,
                "expires_in": "3600", "expires_on": str(now + 3600), "not_before": str(now),
            })
        if url.path.startswith("/open"):
            return self.reply(200, {"backend": url.path})
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"error": "no token"})
        return self.reply(200, {"downstream": url.path})

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
