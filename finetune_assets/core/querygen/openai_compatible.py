"""Query generation through an OpenAI-compatible `/v1/chat/completions` server (Ollama, vLLM, llama.cpp server).

Each document is one request with the prompt of `prompts.py`; each answer becomes a Bedrock-layout output
record whose `modelInput` is the Claude Messages body of the same prompt, so the records look like those of a
Bedrock batch job and `parse_output_record` reads them. The API key is sent as a bearer token and never logged.
"""
from __future__ import annotations

import collections
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import requests

from finetune_assets.core.querygen.base import (
    ProgressCallback,
    QueryGenerator,
    check_documents,
    check_queries_per_type,
)
from finetune_assets.core.querygen.bedrock_records import build_model_input, make_error_record, make_output_record
from finetune_assets.core.querygen.prompts import (
    DEFAULT_MAX_DOCUMENT_CHARS,
    SYSTEM_PROMPT,
    build_query_prompt,
    document_id,
    max_answer_tokens,
)

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
FATAL_STATUS = frozenset({401, 403, 404, 405})  # configuration errors: every request would fail alike


class GenerationServerError(RuntimeError):
    """The server cannot be used at all (unreachable, wrong URL or key, or failing every request)."""


class _RetryableError(Exception):
    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def chat_completions_url(base_url: str) -> str:
    """`http://host:11434/v1` -> `http://host:11434/v1/chat/completions` (a full endpoint URL is kept)."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
    return url if url.endswith("/chat/completions") else f"{url}/chat/completions"


class OpenAICompatibleQueryGenerator(QueryGenerator):
    """Queries from any server that speaks the OpenAI chat completions API.

    Retries 429, 5xx and connection errors with exponential backoff (honouring `Retry-After`), up to
    `max_retries` times per document. A document that still fails becomes an error record; the run stops
    with `GenerationServerError` when the server is unreachable, answers 401/403/404, or
    `max_consecutive_failures` documents in a row fail.
    """

    backend = "openai"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 120.0,
                 max_retries: int = 5, backoff_initial: float = 1.0, backoff_max: float = 30.0,
                 temperature: float | None = 0.3, max_tokens: int | None = None,
                 system_prompt: str | None = SYSTEM_PROMPT, json_mode: bool = False,
                 extra_body: dict | None = None, concurrency: int = 1, max_consecutive_failures: int = 5,
                 show_progress: bool = False, seed: int | None = None,
                 session: requests.Session | None = None, sleep: Callable[[float], None] = time.sleep):
        if not model:
            raise ValueError("model is required (the model name on the server, e.g. 'qwen2.5:7b-instruct')")
        self.url = chat_completions_url(base_url)
        self.model = model
        self._api_key = api_key or None
        self.timeout = timeout
        self.max_retries = max(0, int(max_retries))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.json_mode = json_mode
        self.extra_body = dict(extra_body or {})
        self.concurrency = max(1, int(concurrency))
        self.max_consecutive_failures = max(1, int(max_consecutive_failures))
        self.show_progress = show_progress
        self.seed = seed
        self._session = session or requests.Session()
        self._owns_session = session is None
        self._sleep = sleep
        self._random = random.Random(seed)
        self.stats: collections.Counter = collections.Counter()

    def __repr__(self) -> str:  # no key in reprs, logs or tracebacks
        key = "set" if self._api_key else "none"
        return f"OpenAICompatibleQueryGenerator(url={self.url!r}, model={self.model!r}, api_key={key})"

    def close(self) -> None:
        if self._owns_session:
            self._session.close()

    # ------------------------------------------------------------------------------------------ requests

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def request_body(self, prompt: str, max_tokens: int) -> dict:
        messages = []
        if self.system_prompt:
            messages.append({"role": "system", "content": self.system_prompt})
        messages.append({"role": "user", "content": prompt})
        body: dict = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "stream": False}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.seed is not None:
            body["seed"] = self.seed
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        body.update(self.extra_body)
        return body

    def _post_once(self, body: dict) -> dict:
        try:
            response = self._session.post(self.url, json=body, headers=self._headers(), timeout=self.timeout)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise _RetryableError(f"{type(exc).__name__} talking to {self.url}") from exc
        if response.status_code in RETRY_STATUS or response.status_code >= 500:
            raise _RetryableError(f"HTTP {response.status_code} from {self.url}: {_short(response.text)}",
                                  status=response.status_code, retry_after=_retry_after(response))
        if response.status_code in FATAL_STATUS:
            raise GenerationServerError(f"HTTP {response.status_code} from {self.url} (check base_url, model "
                                        f"and api key): {_short(response.text)}")
        if response.status_code >= 400:
            raise _RecordError(response.status_code, _short(response.text, 500))
        try:
            payload = response.json()
        except ValueError as exc:
            raise _RecordError(502, f"answer is not JSON: {_short(response.text)}") from exc
        if not isinstance(payload, dict) or not payload.get("choices"):
            raise _RecordError(502, f"answer has no choices: {_short(response.text)}")
        return payload

    def _post(self, body: dict) -> dict:
        """POST with retries; returns the parsed answer or raises `_RecordError`/`GenerationServerError`."""
        for attempt in range(self.max_retries + 1):
            try:
                return self._post_once(body)
            except _RetryableError as exc:
                self.stats["retries"] += 1
                if attempt >= self.max_retries:
                    if exc.status is None:
                        raise GenerationServerError(f"{exc} (gave up after {attempt + 1} attempts)") from exc
                    raise _RecordError(exc.status, f"{exc} (gave up after {attempt + 1} attempts)") from exc
                delay = min(self.backoff_max, self.backoff_initial * 2 ** attempt)
                delay = delay * (0.5 + self._random.random() / 2)  # jitter: concurrent clients spread out
                if exc.retry_after is not None:
                    delay = min(self.backoff_max, max(delay, exc.retry_after))
                log.warning("query generation request failed (%s); retry %d/%d in %.1f s",
                            exc, attempt + 1, self.max_retries, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------------------ records

    def _record(self, document: dict, queries_per_type: int, max_document_chars: int | None) -> dict:
        record_id = document_id(document)
        prompt = build_query_prompt(document, queries_per_type, max_document_chars)
        max_tokens = self.max_tokens or max_answer_tokens(queries_per_type)
        model_input = build_model_input(prompt, max_tokens, temperature=self.temperature, system=self.system_prompt)
        try:
            payload = self._post(self.request_body(prompt, max_tokens))
        except _RecordError as exc:
            self.stats["error_records"] += 1
            return make_error_record(record_id, model_input, exc.code, exc.message)
        choice = payload["choices"][0] or {}
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if text is None:
            text = choice.get("text") or ""
        usage = payload.get("usage") or {}
        stop_reason = "max_tokens" if choice.get("finish_reason") == "length" else "end_turn"
        self.stats["records"] += 1
        return make_output_record(record_id, model_input, text, usage.get("prompt_tokens") or 0,
                                  usage.get("completion_tokens") or 0, stop_reason=stop_reason,
                                  model=payload.get("model") or self.model)

    def generate(self, documents: Iterable[dict], queries_per_type: int = 1, *,
                 max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
                 progress_callback: ProgressCallback | None = None) -> Iterator[dict]:
        documents = check_documents(documents)
        check_queries_per_type(queries_per_type)
        total = len(documents)
        progress = _progress_bar(total, self.show_progress)
        consecutive_failures = 0
        done = 0
        try:
            for record in self._records(documents, queries_per_type, max_document_chars):
                consecutive_failures = consecutive_failures + 1 if "error" in record else 0
                if consecutive_failures >= self.max_consecutive_failures:
                    raise GenerationServerError(
                        f"{consecutive_failures} documents in a row failed; last error: {record['error']}")
                done += 1
                if progress is not None:
                    progress.update(1)
                if progress_callback is not None:
                    progress_callback(done, total)
                yield record
        finally:
            if progress is not None:
                progress.close()

    def _records(self, documents: list[dict], queries_per_type: int,
                 max_document_chars: int | None) -> Iterator[dict]:
        if self.concurrency == 1:
            for document in documents:
                yield self._record(document, queries_per_type, max_document_chars)
            return
        # A bounded window of requests in flight; records come back in document order.
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="querygen") as pool:
            pending: collections.deque = collections.deque()
            remaining = iter(documents)
            try:
                for document in remaining:
                    pending.append(pool.submit(self._record, document, queries_per_type, max_document_chars))
                    if len(pending) >= 2 * self.concurrency:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:
                for future in pending:
                    future.cancel()


class _RecordError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to the backoff


def _short(text: str, limit: int = 200) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit] + "..."


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generating queries", unit="doc")
