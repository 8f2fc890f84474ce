"""Generate below the batch minimum with the on-demand Converse API, answers in the batch output layout.

Throttling and transient errors are retried with backoff; a record that still fails becomes an ``error``
record, as in a batch output, so downstream code is shared.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from finetune_assets.clients.bedrock.aws import error_code, error_message
from finetune_assets.clients.bedrock.model_bodies import (
    PromptFn,
    build_model_input,
    converse_request,
    converse_to_model_output,
    model_family,
    normalise_prompt,
)
from finetune_assets.clients.bedrock.outputs import BatchOutputs
from finetune_assets.clients.bedrock.planning import document_id
from finetune_assets.clients.bedrock.settings import GenerationSettings

CONVERSE_RETRYABLE = frozenset({"ThrottlingException", "ServiceUnavailableException", "ServiceUnavailable",
                                "ModelNotReadyException", "InternalServerException", "ModelTimeoutException"})
CONVERSE_FATAL = frozenset({"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"})


class ConverseFallback:
    """The on-demand path of :class:`~finetune_assets.clients.bedrock.client.BedrockBatchClient` (which supplies
    the ``runtime`` client, ``converse_retry``, ``rng``, ``sleep``, ``max_error_samples`` and ``log``)."""

    def converse_records(self, documents: Iterable[Mapping[str, Any]], *, model_id: str, prompt_fn: PromptFn,
                         settings: GenerationSettings = GenerationSettings(), model_family_override: str | None = None,
                         id_field: str = "id", include_model_input: bool = False) -> BatchOutputs:
        """bedrock-runtime Converse per document, answers in the batch output layout.

        Throttling (ThrottlingException, ServiceUnavailable, ModelNotReady, and 5xx) is retried with exponential
        backoff and full jitter; a record that still fails becomes an ``error`` record, like in a batch output.
        Access and missing-model errors stop the run (they would fail every record).
        """
        family = model_family_override or model_family(model_id)
        result = BatchOutputs(mode="on_demand", token_source="converse")
        seen: set[str] = set()
        for document in documents:
            record_id = document_id(document, id_field)
            if record_id in seen:
                raise ValueError(f"duplicate document id {record_id!r}: recordIds must be unique")
            seen.add(record_id)
            system, user = normalise_prompt(prompt_fn(document))
            record: dict[str, Any] = {"recordId": record_id}
            if include_model_input:
                record["modelInput"] = build_model_input(family, system, user, settings, model_id)
            try:
                response = self._converse_with_retry(converse_request(model_id, system, user, settings), record_id)
            except _RecordFailed as failure:
                record["error"] = {"errorCode": failure.status, "errorMessage": failure.message}
                result.error_count += 1
                if len(result.error_samples) < self.max_error_samples:
                    result.error_samples.append({"recordId": record_id, "errorCode": failure.status,
                                                 "errorMessage": failure.message[:300]})
            else:
                record["modelOutput"] = converse_to_model_output(family, response, record_id)
                usage = response.get("usage", {}) or {}
                result.input_tokens += int(usage.get("inputTokens", 0) or 0)
                result.output_tokens += int(usage.get("outputTokens", 0) or 0)
            result.records.append(record)
        self.log.info(f"converse: {len(result.records)} record(s), {result.error_count} error(s), tokens in/out "
                      f"{result.input_tokens}/{result.output_tokens}")
        return result

    def _converse_with_retry(self, request: dict, record_id: str) -> dict:
        retry = self.converse_retry
        for attempt in range(1, retry.max_attempts + 1):
            try:
                return self.runtime.converse(**request)
            except Exception as exc:
                code = error_code(exc)
                if not code:
                    raise
                if code in CONVERSE_FATAL:
                    raise
                status = int(getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
                             or 0)
                if code in CONVERSE_RETRYABLE and attempt < retry.max_attempts:
                    delay = self.rng.uniform(0, min(retry.max_delay_s, retry.base_delay_s * 2 ** (attempt - 1)))
                    self.log.info(f"converse {code} for record {record_id}; retry {attempt}/{retry.max_attempts - 1} "
                                  f"in {delay:.1f} s")
                    self.sleep(delay)
                    continue
                raise _RecordFailed(status or (429 if code == "ThrottlingException" else 400),
                                    f"{code}: {error_message(exc)}") from exc
        raise AssertionError("unreachable")


class _RecordFailed(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message
