"""boto3 clients with standard retries, and the S3 URI, naming and error helpers the SageMaker modules share."""
from __future__ import annotations

import re
from urllib.parse import urlparse


def make_client(service: str, region_name: str | None = None, **kwargs):
    """A boto3 client with botocore's standard retry mode (throttling and transient errors are retried)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 8})
    return boto3.client(service, region_name=region_name or None, config=config, **kwargs)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def join_s3(uri: str, *parts: str) -> str:
    return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts if p and p.strip("/"))])


def slug(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower()
    return cleaned[:limit].strip("-")


def region_of(client) -> str:
    region = client.meta.region_name
    if not region:
        raise ValueError("the SageMaker client has no region: set region_name or AWS_REGION/AWS_DEFAULT_REGION")
    return region


def is_not_found(error) -> bool:
    """Whether a botocore ClientError says the resource does not exist (SageMaker answers in several ways)."""
    info = error.response.get("Error", {})
    code, message = info.get("Code", ""), info.get("Message", "").lower()
    return code in ("ResourceNotFound", "ResourceNotFoundException") or (
        code in ("ValidationException", "ValidationError")
        and ("not found" in message or "could not find" in message or "does not exist" in message))
