"""Describe a SageMaker endpoint as an ml-commons connector and find or create that connector.

Connector credentials are never logged: not by this module, and not by opensearch-py either (its
request-body debug logging is muted while the connector request is sent).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from opensearchpy import OpenSearch
from opensearchpy import exceptions as os_errors

from finetune_assets.clients.ml_commons.api import DENSE, ML, SPARSE, Api, is_ambiguous, search_hits
from finetune_assets.clients.ml_commons.errors import MLCommonsError
from finetune_assets.clients.retry import RetryPolicy

log = logging.getLogger(__name__)

PRE_PROCESS_DEFAULT = "connector.pre_process.default.embedding"
POST_PROCESS_DEFAULT = "connector.post_process.default.embedding"


@dataclass(frozen=True)
class SageMakerEndpoint:
    """A SageMaker real-time endpoint serving embeddings; ``repr`` never shows keys.

    Dense (TEXT_EMBEDDING): the endpoint takes a JSON list of strings and returns a list of vectors (what
    ml-commons' default pre/post-processing functions expect). Sparse (SPARSE_ENCODING): same input, and it
    returns a list of ``{token: weight}`` objects, which ml-commons passes through as ``response`` for the
    ``sparse_encoding`` processor and ``neural_sparse`` query (there is no built-in sparse post-processor).
    Credentials: ``role_arn`` (an IAM role the OpenSearch domain may assume) or access keys.
    """

    endpoint_name: str
    region: str
    function_name: str = DENSE
    role_arn: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"https://runtime.sagemaker.{self.region}.amazonaws.com/endpoints/{self.endpoint_name}/invocations"

    def credential(self) -> dict[str, str]:
        if self.role_arn and not self.access_key:
            return {"roleArn": self.role_arn}
        if self.access_key and self.secret_key:
            keys = {"access_key": self.access_key, "secret_key": self.secret_key}
            if self.session_token:
                keys["session_token"] = self.session_token
            return keys
        raise ValueError("a SageMaker connector needs role_arn, or access_key and secret_key")


def sagemaker_connector_body(endpoint: SageMakerEndpoint, *, name: str, description: str | None = None) -> dict:
    """The ``connectors/_create`` body (ml-commons' SageMaker blueprint, protocol aws_sigv4)."""
    if endpoint.function_name not in (DENSE, SPARSE):
        raise ValueError(f"function_name must be {DENSE} or {SPARSE}, got {endpoint.function_name!r}")
    action: dict[str, Any] = {
        "action_type": "predict",
        "method": "POST",
        "headers": {"content-type": "application/json"},
        "url": endpoint.url,
        "request_body": "${parameters.input}",
        "pre_process_function": PRE_PROCESS_DEFAULT,
    }
    if endpoint.function_name == DENSE:
        action["post_process_function"] = POST_PROCESS_DEFAULT
    return {
        "name": name,
        "description": description or f"SageMaker endpoint {endpoint.endpoint_name} ({endpoint.function_name})",
        "version": "1",
        "protocol": "aws_sigv4",
        "credential": endpoint.credential(),
        "parameters": {"region": endpoint.region, "service_name": "sagemaker"},
        "actions": [action],
    }


def _predict_url(connector: dict) -> str | None:
    for action in connector.get("actions") or []:
        if str(action.get("action_type", "")).lower() == "predict":
            return action.get("url")
    return None


def ensure_connector(client: OpenSearch, body: dict, *, retry: RetryPolicy | None = None,
                     _api: Api | None = None) -> tuple[str, bool]:
    """The id of the connector named ``body['name']`` (reused when it calls the same URL, else created) and
    whether it was created now. A connector of that name calling another URL is an error, not reused."""
    api = _api or Api(client, retry)
    name, url = body["name"], _predict_url(body)
    for attempt in range(api.retry.max_retries + 1):
        hits = search_hits(api, f"{ML}/connectors/_search",
                       {"bool": {"filter": [{"term": {"name.keyword": name}}]}}, 10)
        same_name = [hit for hit in hits if hit.get("name") == name]
        for hit in same_name:
            if _predict_url(hit) == url:
                log.info("connector %r exists: %s (credentials are not compared; delete it to change them)",
                         name, hit["_id"])
                return hit["_id"], False
        if same_name:
            raise MLCommonsError(f"connector {name!r} ({same_name[0]['_id']}) calls {_predict_url(same_name[0])}, "
                                 f"not {url}: choose another connector name or delete that connector")
        try:
            answer = api.call("POST", f"{ML}/connectors/_create", body=body, creates=True, quiet=True)
        except os_errors.TransportError as exc:
            if is_ambiguous(exc) and attempt < api.retry.max_retries:
                api.backoff(attempt)
                continue
            raise api.fail(exc, f"creating connector {name!r}") from exc
        connector_id = answer.get("connector_id")
        if not connector_id:
            raise MLCommonsError(f"connectors/_create answered without connector_id: {answer}")
        log.info("created connector %r: %s (%s)", name, connector_id, url)
        return connector_id, True
    raise MLCommonsError(f"could not create connector {name!r}")
