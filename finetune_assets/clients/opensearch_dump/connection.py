"""Connect to an OpenSearch cluster: the URL, basic auth or AWS SigV4, and TLS settings, without logging secrets."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from opensearchpy import OpenSearch, RequestsHttpConnection

from finetune_assets.clients.opensearch_dump.errors import AuthenticationError
from finetune_assets.core.redact import redact, remember_secret

log = logging.getLogger(__name__)

AWS_SERVICES = ("es", "aoss")
PASSWORD_ENV = "OPENSEARCH_PASSWORD"


def _without_userinfo(url: str) -> str:
    """The URL without user:password@ (the credentials go to the client as basic auth instead)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


@dataclass(frozen=True)
class OpenSearchConnection:
    """Where the cluster is and how to authenticate; ``repr`` never shows the password, nor one in the URL."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    aws_region: str | None = None
    aws_service: str = "es"
    verify_certs: bool = True
    ca_certs: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    pool_maxsize: int = 16

    @classmethod
    def from_env(cls, url: str, username: str | None = None, **kwargs: Any) -> "OpenSearchConnection":
        """Settings with the password taken from ``OPENSEARCH_PASSWORD`` when a username is given."""
        password = os.environ.get(PASSWORD_ENV) if username else None
        return cls(url=url, username=username, password=password, **kwargs)

    @property
    def auth_kind(self) -> str:
        if self.aws_region:
            return f"aws-sigv4 ({self.aws_service}, {self.aws_region})"
        return "basic" if self.username else "none"

    def __repr__(self) -> str:  # the URL may hold user:password
        return f"OpenSearchConnection({self.describe()})"

    def describe(self) -> str:
        """For logs: URL (credentials redacted), auth kind, TLS verification."""
        tls = "on" if self.verify_certs else "OFF"
        return f"{redact(self.url)} (auth: {self.auth_kind}, certificate verification {tls})"

    def client(self) -> OpenSearch:
        return opensearch_client(self.url, username=self.username, password=self.password, aws_region=self.aws_region,
                           aws_service=self.aws_service, verify_certs=self.verify_certs, ca_certs=self.ca_certs,
                           timeout=self.timeout, max_retries=self.max_retries, pool_maxsize=self.pool_maxsize)


def opensearch_client(url: str, *, username: str | None = None, password: str | None = None,
                aws_region: str | None = None, aws_service: str = "es", verify_certs: bool = True,
                ca_certs: str | None = None, timeout: float = 60.0, max_retries: int = 2,
                pool_maxsize: int = 16, aws_credentials: Any = None) -> OpenSearch:
    """An opensearch-py client for ``url`` (``https://host:9200``).

    Authentication: HTTP basic (``username``/``password``; credentials written into the URL are taken
    from it and removed), or AWS SigV4 when ``aws_region`` is set: ``aws_service="es"`` for Amazon
    OpenSearch Service domains, ``"aoss"`` for OpenSearch Serverless collections, with boto3's default
    credential chain (environment, profile, instance/task role) unless ``aws_credentials`` is given.
    TLS certificates are verified unless ``verify_certs=False``. ``max_retries`` is the transport's own
    immediate retry count; :func:`.dump.dump_index` retries with backoff on top. The password is never logged.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"OpenSearch URL must look like https://host:9200, got {redact(url)!r}")
    if parts.username is not None or parts.password is not None:
        remember_secret(unquote(parts.password or ""), username=unquote(parts.username or ""))
        username = username or unquote(parts.username or "")
        password = password if password is not None else unquote(parts.password or "")
        url = _without_userinfo(url)
    kwargs: dict[str, Any] = {
        "hosts": [url], "timeout": timeout, "max_retries": max_retries, "retry_on_timeout": max_retries > 0,
        "verify_certs": verify_certs, "pool_maxsize": pool_maxsize,
    }
    if parts.scheme == "https":
        kwargs["use_ssl"] = True
        if ca_certs:
            kwargs["ca_certs"] = ca_certs
        if not verify_certs:
            kwargs["ssl_assert_hostname"] = False
            kwargs["ssl_show_warn"] = False
            log.warning("TLS certificate verification is OFF for %s", redact(url))
    if aws_region:
        if username:
            raise ValueError("choose either basic auth (username/password) or AWS SigV4 (aws_region), not both")
        if aws_service not in AWS_SERVICES:
            raise ValueError(f"aws_service must be 'es' (OpenSearch Service) or 'aoss' (Serverless), "
                             f"got {aws_service!r}")
        from opensearchpy import RequestsAWSV4SignerAuth

        credentials = aws_credentials
        if credentials is None:
            import boto3

            credentials = boto3.Session(region_name=aws_region).get_credentials()
        if credentials is None:
            raise AuthenticationError("no AWS credentials found for SigV4 signing: set AWS_ACCESS_KEY_ID/"
                                      "AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an IAM role")
        kwargs["http_auth"] = RequestsAWSV4SignerAuth(credentials, aws_region, aws_service)
        kwargs["connection_class"] = RequestsHttpConnection
    elif username:
        if password is None:
            raise ValueError(f"no password for OpenSearch user {username!r} (set {PASSWORD_ENV})")
        remember_secret(password, username=username)
        kwargs["http_auth"] = (username, password)
    return OpenSearch(**kwargs)
