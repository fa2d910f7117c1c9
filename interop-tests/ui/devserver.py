#!/usr/bin/env python3
"""Development server for Warren's management UI (Python stdlib only).

Serves src/management/ui/ at / and proxies /api/... to an upstream management
API (RabbitMQ's or Warren's), so the UI runs same-origin against a real API:

    python3 interop-tests/ui/devserver.py --port 15690 --upstream http://127.0.0.1:15672
    # then open http://127.0.0.1:15690/  (or /?poll=1000 for a 1 s refresh)

Static files are read from disk on every request, so edits show up on reload.
"""
import argparse
import http.client
import mimetypes
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ROOT = os.path.normpath(os.path.join(HERE, "..", "..", "src", "management", "ui"))
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
              "trailers", "transfer-encoding", "upgrade", "host", "content-length"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root = DEFAULT_ROOT
    upstream = urllib.parse.urlsplit("http://127.0.0.1:15672")
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write("devserver: %s %s\n" % (self.address_string(), fmt % args))

    def _handle(self):
        path = self.path.split("?", 1)[0]
        if path == "/api" or path.startswith("/api/"):
            return self._proxy()
        if self.command not in ("GET", "HEAD"):
            return self._send(405, b"method not allowed\n", "text/plain")
        return self._static(path)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle

    def _send(self, status, body, ctype, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _static(self, path):
        rel = urllib.parse.unquote(path).lstrip("/") or "index.html"
        full = os.path.normpath(os.path.join(self.root, rel))
        if not full.startswith(self.root + os.sep) or not os.path.isfile(full):
            return self._send(404, b"not found\n", "text/plain")
        with open(full, "rb") as f:
            body = f.read()
        ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
            ctype += "; charset=utf-8"
        return self._send(200, body, ctype)

    def _proxy(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        up = self.upstream
        conn_cls = http.client.HTTPSConnection if up.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(up.hostname, up.port or (443 if up.scheme == "https" else 80), timeout=30)
        try:
            conn.request(self.command, up.path.rstrip("/") + self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except OSError as e:
            msg = ('{"error":"bad_gateway","reason":"devserver: upstream %s unreachable: %s"}'
                   % (up.geturl(), str(e).replace('"', "'"))).encode()
            return self._send(502, msg, "application/json")
        finally:
            conn.close()
        extra = [(k, v) for k, v in resp.getheaders()
                 if k.lower() not in HOP_BY_HOP and k.lower() not in ("content-type", "cache-control", "date", "server")]
        return self._send(resp.status, data, resp.getheader("Content-Type") or "application/octet-stream", extra)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=15690, help="0 picks a free port")
    ap.add_argument("--upstream", default=os.environ.get("UI_UPSTREAM", "http://127.0.0.1:15672"))
    ap.add_argument("--root", default=DEFAULT_ROOT)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    Handler.root = os.path.abspath(args.root)
    Handler.upstream = urllib.parse.urlsplit(args.upstream)
    Handler.quiet = args.quiet
    srv = ThreadingHTTPServer((args.bind, args.port), Handler)
    srv.daemon_threads = True
    # the first line on stdout is the URL (run.sh reads it when --port 0 is used)
    print("http://%s:%d/" % (args.bind, srv.server_address[1]), flush=True)
    sys.stderr.write("devserver: serving %s, proxying /api/ to %s\n" % (Handler.root, args.upstream))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
