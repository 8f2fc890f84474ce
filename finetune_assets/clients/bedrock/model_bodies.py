"""Request and response bodies per model family (Anthropic Claude, Amazon Nova): InvokeModel, Converse, usage.

One record per document goes to Bedrock: ``{"recordId": <doc id>, "modelInput": <InvokeModel body>}``. The body
is built for the model family picked from the model id (Anthropic Claude Messages API, Amazon Nova Messages API).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from finetune_assets.clients.bedrock.errors import UnsupportedModelError
from finetune_assets.clients.bedrock.settings import GenerationSettings

ANTHROPIC_VERSION = "bedrock-2023-05-31"

PromptParts = tuple[str | None, str]
PromptFn = Callable[[Mapping[str, Any]], "str | PromptParts"]

_GEO_PREFIX = r"(?:[a-z]{2,6}(?:-[a-z]+)?\.)?"  # us., eu., apac., global., us-gov. ... (inference profiles)
_CLAUDE = re.compile(rf"^{_GEO_PREFIX}anthropic\.claude")
_NOVA = re.compile(rf"^{_GEO_PREFIX}amazon\.nova-(?!canvas|reel|sonic)")
_NOVA_V1 = re.compile(rf"^{_GEO_PREFIX}amazon\.nova-(?:micro|lite|pro|premier)-v1")


def model_family(model_id: str) -> str:
    """'anthropic_claude' or 'amazon_nova', from a model id, an inference-profile id or a foundation-model ARN."""
    tail = model_id.strip().lower().rsplit("/", 1)[-1]
    if _CLAUDE.match(tail):
        return "anthropic_claude"
    if _NOVA.match(tail):
        return "amazon_nova"
    raise UnsupportedModelError(
        f"cannot tell the request format of model {model_id!r}: supported are Anthropic Claude "
        f"(anthropic.claude-*, us.anthropic.claude-*) and Amazon Nova text models (amazon.nova-*, us.amazon.nova-*). "
        f"For an application inference profile ARN pass model_family explicitly.")


def normalise_prompt(prompt: str | PromptParts) -> PromptParts:
    if isinstance(prompt, str):
        return None, prompt
    system, user = prompt
    if not isinstance(user, str) or not user:
        raise ValueError("prompt_fn must return the user prompt text (or a (system, user) pair)")
    return (system or None), user


def build_model_input(family: str, system: str | None, user: str, settings: GenerationSettings,
                      model_id: str = "") -> dict:
    """The InvokeModel request body for one prompt (what goes in ``modelInput``)."""
    if family == "anthropic_claude":
        body: dict[str, Any] = {"anthropic_version": ANTHROPIC_VERSION, "max_tokens": settings.max_tokens}
        if system:
            body["system"] = system
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
        if settings.temperature is not None:
            body["temperature"] = settings.temperature
        if settings.top_p is not None:
            body["top_p"] = settings.top_p
        if settings.stop_sequences:
            body["stop_sequences"] = list(settings.stop_sequences)
        return body
    if family == "amazon_nova":
        body = {}
        if _NOVA_V1.match(model_id.strip().lower().rsplit("/", 1)[-1]):
            body["schemaVersion"] = "messages-v1"
        if system:
            body["system"] = [{"text": system}]
        body["messages"] = [{"role": "user", "content": [{"text": user}]}]
        body["inferenceConfig"] = _inference_config(settings)
        return body
    raise UnsupportedModelError(f"unknown model family {family!r}")


def _inference_config(settings: GenerationSettings) -> dict:
    config: dict[str, Any] = {"maxTokens": settings.max_tokens}
    if settings.temperature is not None:
        config["temperature"] = settings.temperature
    if settings.top_p is not None:
        config["topP"] = settings.top_p
    if settings.stop_sequences:
        config["stopSequences"] = list(settings.stop_sequences)
    return config


def converse_request(model_id: str, system: str | None, user: str, settings: GenerationSettings) -> dict:
    request: dict[str, Any] = {"modelId": model_id,
                               "messages": [{"role": "user", "content": [{"text": user}]}],
                               "inferenceConfig": _inference_config(settings)}
    if system:
        request["system"] = [{"text": system}]
    return request


def converse_to_model_output(family: str, response: Mapping[str, Any], record_id: str) -> dict:
    """A Converse answer rewritten as the family's InvokeModel response body (what batch puts in modelOutput)."""
    content = response.get("output", {}).get("message", {}).get("content", []) or []
    texts = [block["text"] for block in content if isinstance(block, Mapping) and "text" in block]
    usage = response.get("usage", {}) or {}
    stop = response.get("stopReason")
    if family == "anthropic_claude":
        return {"id": f"converse-{record_id}", "type": "message", "role": "assistant",
                "content": [{"type": "text", "text": t} for t in texts], "stop_reason": stop, "stop_sequence": None,
                "usage": {"input_tokens": usage.get("inputTokens", 0), "output_tokens": usage.get("outputTokens", 0)}}
    return {"output": {"message": {"role": "assistant", "content": [{"text": t} for t in texts]}},
            "stopReason": stop,
            "usage": {"inputTokens": usage.get("inputTokens", 0), "outputTokens": usage.get("outputTokens", 0),
                      "totalTokens": usage.get("totalTokens", 0)}}


def record_usage(record: Mapping[str, Any]) -> tuple[int, int]:
    """(input, output) tokens from a batch output record's modelOutput (Claude or Nova usage fields)."""
    output = record.get("modelOutput")
    usage = output.get("usage") if isinstance(output, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0
    tokens_in = usage.get("input_tokens", usage.get("inputTokens", 0)) or 0
    tokens_out = usage.get("output_tokens", usage.get("outputTokens", 0)) or 0
    return int(tokens_in), int(tokens_out)
