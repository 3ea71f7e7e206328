"""Real servers on loopback for the remote-dataset tests: Python's HTTP server (with injectable faults) and
moto's S3 server, each serving a packed dataset directory."""

from __future__ import annotations

import functools
import http.server
import os
import socket
import threading
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.server.owner.requests.append(self.path)
        faults = self.server.owner.faults.get(name)
        if faults:
            fault = faults.pop(0)
            if fault == "cut":  # promise the whole file, send half, hang up: a transfer cut short
                self._send_half()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault == "error":
                self.send_error(503, "try again")
                return
            if fault == "stall":  # promise the whole file, send half, then hold on: a download in progress
                self._send_half()
                self.server.owner.released.wait(30)
                return
        super().do_GET()

    def _send_half(self) -> None:
        """Promise the whole file (its Content-Length) and send its first half."""
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpDatasetServer


class HttpDatasetServer:
    """Serves ``directory`` over HTTP on 127.0.0.1; ``stop()`` and ``start()`` keep the port.

    ``faults[file_name]`` is a list of faults ("cut", "error", "stall") applied to that file's next requests
    (a stalled request holds on until ``stop()``); ``requests`` lists every path asked for.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = 0
        self.requests: list[str] = []
        self.faults: dict[str, list[str]] = {}
        self._server: _Server | None = None
        self.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        server = _Server(("127.0.0.1", self.port), functools.partial(_Handler, directory=str(self.directory)))
        server.owner = self
        self.released = threading.Event()  # ends the stalled requests
        self.port = server.server_address[1]
        # A short poll: stop() waits for it, once per test.
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self.released.set()
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class S3DatasetServer:
    """moto's S3 server on 127.0.0.1 with a bucket; ``upload(directory, prefix)`` copies a dataset in."""

    def __init__(self) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.storage_options = {
            "endpoint_url": self.endpoint,
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"region_name": "us-east-1"},
        }
        import boto3

        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        self.client.create_bucket(Bucket="data")

    def upload(self, directory: Path, prefix: str) -> str:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                self.client.upload_file(str(path), "data", f"{prefix}/{path.relative_to(directory).as_posix()}")
        return f"s3://data/{prefix}"

    def stop(self) -> None:
        self._server.stop()
