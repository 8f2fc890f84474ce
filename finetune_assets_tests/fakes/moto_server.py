"""A real moto server over HTTP for tests: ``moto_server`` from this virtualenv on 127.0.0.1, a free port.

Use the fixtures by importing them into a test module (``from finetune_assets_tests.fakes.moto_server import
moto_aws, moto_server  # noqa: F401``):

- ``moto_server`` (session): starts the server once, stops it (terminate, then kill) at the end of the session.
- ``moto_aws`` (function): resets moto's state, then sets ``AWS_ENDPOINT_URL``, fake credentials and a region
  in ``os.environ`` for the test only, restoring the previous values afterwards (no monkeypatch needed, so it
  also works from a session- or module-scoped fixture via ``server.environ()``).

boto3 >= 1.28 honours ``AWS_ENDPOINT_URL`` for every service, so code under test needs no endpoint argument.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Variables that could point boto3 at a real account or profile while a test runs.
_CLEARED = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def moto_server_executable() -> str:
    candidate = Path(sys.executable).with_name("moto_server")
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("moto_server")
    if found:
        return found
    raise RuntimeError("moto_server is not installed in this environment: pip install 'moto[server]' "
                       "(it is in the project's [test] extra)")


@dataclass
class MotoServer:
    endpoint_url: str
    process: subprocess.Popen
    log_path: Path
    region: str = "us-east-1"
    _log_handle: object = field(default=None, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """The environment a boto3 client needs to talk to this server (fake credentials only)."""
        config_dir = self.log_path.parent
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            **FAKE_CREDENTIALS,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
            # No real ~/.aws profile can leak into a test.
            "AWS_CONFIG_FILE": str(config_dir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "no-aws-credentials"),
        }

    @contextmanager
    def environ(self) -> Iterator[MotoServer]:
        """Set ``self.env`` in os.environ (and clear profile variables); restore everything on exit."""
        keys = (*self.env, *_CLEARED)
        saved = {key: os.environ.get(key) for key in keys}
        try:
            for key in _CLEARED:
                os.environ.pop(key, None)
            os.environ.update(self.env)
            yield self
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def client(self, service: str, **kwargs):
        """A boto3 client bound to this server explicitly (does not depend on os.environ)."""
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                            aws_session_token=FAKE_CREDENTIALS["AWS_SESSION_TOKEN"], **kwargs)

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self._log_handle is not None:
            self._log_handle.close()
        shutil.rmtree(self.log_path.parent, ignore_errors=True)


def _wait_until_up(server: MotoServer, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/moto-api/data.json", timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    return False


def start_moto_server(timeout: float = 60.0, attempts: int = 3) -> MotoServer:
    """Start moto_server on 127.0.0.1 and a free port; retry on another port if it does not come up."""
    executable = moto_server_executable()
    last_log = ""
    for _ in range(attempts):
        port = _free_port()
        folder = Path(tempfile.mkdtemp(prefix="moto-server-"))
        log_path = folder / "moto_server.log"
        handle = log_path.open("wb")
        process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=handle,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **FAKE_CREDENTIALS})
        server = MotoServer(endpoint_url=f"http://127.0.0.1:{port}", process=process, log_path=log_path,
                            _log_handle=handle)
        if _wait_until_up(server, timeout):
            return server
        last_log = server.log_tail()
        server.stop()
    raise RuntimeError(f"moto_server did not start after {attempts} attempts; last log:\n{last_log}")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_aws(moto_server: MotoServer) -> Iterator[MotoServer]:
    """A clean moto state and AWS_* variables pointing at it, for one test."""
    moto_server.reset()
    with moto_server.environ():
        yield moto_server
