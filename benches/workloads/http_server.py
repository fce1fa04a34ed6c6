"""A small threaded HTTP service for the attach benchmark (benches/server_attach.py).

`http_server.py PORT` serves on 127.0.0.1:PORT with the standard library's ThreadingHTTPServer
(one thread per connection; the load generator keeps 16 open, so 16 worker threads) and prints
`ready` once listening. Each request: parse the query, look the item up in a shared cache
(a dict under a lock, refilled when an entry is missing or stale), render JSON with a little
computation, and log one line at INFO (handler writing to an in-memory stream), like a typical
JSON API with logging and a shared cache.
"""
import hashlib
import io
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

log = logging.getLogger("api")
log.setLevel(logging.INFO)
log.addHandler(logging.StreamHandler(io.StringIO()))
log.propagate = False

CACHE = {}
CACHE_LOCK = threading.Lock()
TTL = 0.5


def compute_item(key):
    h = hashlib.sha256(key.encode()).hexdigest()
    return {"key": key, "digest": h, "score": sum(int(c, 16) for c in h[:32]), "tags": [h[i : i + 4] for i in range(0, 24, 4)]}


def lookup(key):
    now = time.monotonic()
    with CACHE_LOCK:
        hit = CACHE.get(key)
        if hit is not None and now - hit[0] < TTL:
            return hit[1]
    item = compute_item(key)
    with CACHE_LOCK:
        CACHE[key] = (now, item)
    return item


def render(item, n):
    rows = [{"i": i, "v": (item["score"] * (i + 1)) % 997, "tag": item["tags"][i % len(item["tags"])]} for i in range(n)]
    return json.dumps({"item": item, "rows": rows, "total": sum(r["v"] for r in rows)}).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        q = parse_qs(urlparse(self.path).query)
        key = q.get("k", ["item%d" % (hash(self.path) % 64)])[0]
        body = render(lookup(key), 20)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        log.info("GET %s -> %d bytes", self.path, len(body))

    def log_message(self, *args):
        pass


def main():
    port = int(sys.argv[1])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


main()
