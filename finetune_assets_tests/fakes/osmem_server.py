"""osmem (in-memory OpenSearch-compatible server) for tests, and a fault-injecting HTTP proxy in front of it.

The osmem-server wheel ships a static Go binary (``osmem_server/bin/osmem-server``) and a pytest plugin
whose ``osmem_server`` fixture starts it from ini-configured seed folders and freezes it. Here we start our
own, empty and writable, on 127.0.0.1 with port 0 (the binary picks a free port and reports the URL on
stdout); it exits with the test process (``--parent-pid``) and is closed at the end of the session.

What osmem 0.1.6 does for index dumps (checked by finetune_assets_tests/clients/test_index_dump.py):
create/delete PIT, GET /_search/point_in_time/_all (how tests see that a PIT was closed), PIT searches sorted
on ``_shard_doc`` with ``search_after``, ``slice`` on PIT and on scroll searches (slices partition the hits:
per-slice totals add up to the whole), keep_alive expiry (a real 404 search_context_missing_exception after
it), scroll + clear_scroll, ``_source`` includes, index_not_found_exception, max_result_window (10,000). It
rejects ``slice.max`` of 1 (as OpenSearch does) and ``_nodes/stats``. Each PIT page costs time in proportion
to the whole index (about 0.7 s per page at 100,000 documents), unlike a real cluster; scroll does not.

Use in a test module::

    from finetune_assets_tests.fakes.osmem_server import osmem, fault_proxy  # noqa: F401 (fixtures)
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from osmem_server import OsmemServer

PIT_MISSING_BODY = {
    "error": {
        "root_cause": [{"type": "search_context_missing_exception", "reason": "No search context found for id [1]"}],
        "type": "search_phase_execution_exception", "reason": "all shards failed", "phase": "query",
        "grouped": True,
        "caused_by": {"type": "search_context_missing_exception", "reason": "No search context found for id [1]"},
    },
    "status": 404,
}


@contextmanager
def running_osmem() -> Iterator[OsmemServer]:
    """An empty, writable osmem on 127.0.0.1 and a free port; stopped on exit."""
    server = OsmemServer.start(addr="127.0.0.1:0", japanese=False, freeze=False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def osmem() -> Iterator[OsmemServer]:
    """One osmem for the test session (tests create their own indices in it)."""
    with running_osmem() as server:
        yield server


def open_pits(server: OsmemServer) -> list[dict]:
    """Point-in-time contexts osmem still holds (GET /_search/point_in_time/_all)."""
    return server.request("GET", "/_search/point_in_time/_all").get("pits", [])


def bulk_index(client, index: str, documents: Iterable[dict], *, shards: int = 1,
               mappings: dict | None = None, chunk_size: int = 2000) -> int:
    """Create ``index`` and bulk-load ``documents`` (each with an ``_id``); refreshed when done."""
    from opensearchpy import helpers

    body: dict = {"settings": {"number_of_shards": shards, "number_of_replicas": 0}}
    if mappings:
        body["mappings"] = mappings
    client.indices.create(index=index, body=body)
    actions = ({"_index": index, "_id": doc["_id"], **{k: v for k, v in doc.items() if k != "_id"}}
               for doc in documents)
    ok, errors = helpers.bulk(client, actions, chunk_size=chunk_size, refresh=True, raise_on_error=True)
    assert not errors, errors
    return ok


# ----------------------------------------------------------------------------------------- fault proxy


@dataclass
class Fault:
    """Fail matching requests number ``after + 1`` to ``after + times`` (counted among matching ones).

    kind: "status" (answer ``status`` with ``body``), "pit_missing" (404 search_context_missing),
    "drop" (close the connection without answering; the server never sees the request),
    "drop_response" (forward, then close without answering: the server did the work, the answer is lost).
    """

    kind: str
    method: str | None = None
    path_contains: str | None = None
    body_contains: str | None = None
    after: int = 0
    times: int = 1
    status: int = 503
    body: dict | str | None = None
    matched: int = 0
    fired: int = 0

    def matches(self, method: str, path: str, body: bytes) -> bool:
        if self.method and method != self.method:
            return False
        if self.path_contains and self.path_contains not in path:
            return False
        if self.body_contains and self.body_contains.encode() not in body:
            return False
        return True


@dataclass
class RecordedRequest:
    method: str
    path: str
    body: bytes
    headers: dict            # lower-case names
    fault: str | None = None


@dataclass
class FaultProxy:
    """HTTP/1.1 proxy on 127.0.0.1 that forwards to ``upstream`` and injects :class:`Fault` s."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    rewrite: Callable[[str, str, bytes], bytes] | None = None
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, **kwargs) -> Fault:
        fault = Fault(kind, **kwargs)
        with self._lock:
            self.faults.append(fault)
        return fault

    def reset(self) -> None:
        with self._lock:
            self.faults.clear()
            self.requests.clear()
        self.rewrite = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def calls(self, method: str | None = None, path_contains: str = "") -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if (method is None or r.method == method) and path_contains in r.path]

    def _decide(self, method: str, path: str, body: bytes, headers: dict) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self.faults:
                if fault.matches(method, path, body):
                    fault.matched += 1
                    if chosen is None and fault.matched > fault.after and fault.fired < fault.times:
                        fault.fired += 1
                        chosen = fault
            self.requests.append(RecordedRequest(method, path, body, headers, chosen.kind if chosen else None))
            return chosen

    def _forward(self, method: str, path: str, body: bytes, headers: dict) -> tuple[int, list, bytes]:
        parts = urlsplit(self.upstream)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        try:
            send = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "content-length")}
            conn.request(method, path, body=body or None, headers=send)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.getheaders(), data
        finally:
            conn.close()

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                if proxy.rewrite is not None:
                    body = proxy.rewrite(self.command, self.path, body)
                fault = proxy._decide(self.command, self.path, body, headers)
                if fault is not None and fault.kind == "drop":
                    self._drop()
                    return
                if fault is not None and fault.kind == "status":
                    data = fault.body if fault.body is not None else {"error": {"type": "injected", "reason":
                                                                               f"injected HTTP {fault.status}"},
                                                                     "status": fault.status}
                    raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
                    self._answer(fault.status, raw, "application/json" if not isinstance(data, str) else "text/plain")
                    return
                if fault is not None and fault.kind == "pit_missing":
                    self._answer(404, json.dumps(PIT_MISSING_BODY).encode())
                    return
                status, response_headers, data = proxy._forward(self.command, self.path, body, headers)
                if fault is not None and fault.kind == "drop_response":
                    self._drop()
                    return
                content_type = next((v for k, v in response_headers if k.lower() == "content-type"),
                                    "application/json")
                self._answer(status, data, content_type)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_one

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture
def fault_proxy(osmem: OsmemServer) -> Iterator[FaultProxy]:
    """A fresh proxy in front of the session's osmem, for one test."""
    with FaultProxy(osmem.url) as proxy:
        yield proxy
