"""boto3 clients with standard retries, and the S3, naming and error helpers the Bedrock modules share."""
from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from urllib.parse import urlparse


def make_client(service: str, *, region_name: str | None = None, max_attempts: int = 8, read_timeout: int = 60):
    """A boto3 client with botocore's standard retry mode (throttling and 5xx retried with backoff)."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": max_attempts}, read_timeout=read_timeout,
                    user_agent_extra="finetune-assets")
    return boto3.client(service, region_name=region_name, config=config)


def split_s3_uri(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return parsed.netloc, parsed.path.lstrip("/")


def slug(text: str, limit: int) -> str:
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-")[:limit].strip("-")
    return cleaned or "corpus"


def error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        return str(response.get("Error", {}).get("Message", ""))[:500]
    return str(exc)[:500]


@lru_cache(maxsize=1)
def _bedrock_service_model():
    """botocore's model of the Bedrock control plane: the patterns names and URIs are checked against."""
    import botocore.session

    return botocore.session.get_session().get_service_model("bedrock")


def job_id_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def check_shape(shape: str, value: str, what: str) -> None:
    """Raise ValueError when ``value`` breaks the length or pattern Bedrock's service model gives ``shape``."""
    metadata = _bedrock_service_model().shape_for(shape).metadata
    if not (metadata.get("min", 0) <= len(value) <= metadata.get("max", 1 << 30)) or \
            not re.fullmatch(metadata["pattern"], value):
        raise ValueError(f"{what} {value!r} does not match what Bedrock accepts ({shape}: "
                         f"pattern {metadata['pattern']!r}, length {metadata.get('min')}..{metadata.get('max')})")
