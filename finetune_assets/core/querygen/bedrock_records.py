"""The record layout of Bedrock batch inference, and the one parser for every generator's output.

Bedrock batch inference reads `{"recordId", "modelInput"}` lines and writes `<input>.jsonl.out` files whose
lines are `{"recordId", "modelInput", "modelOutput"}`, or `{"recordId", "modelInput", "error": {"errorCode",
"errorMessage"}}` for a record that failed. `modelInput`/`modelOutput` are the model's own request and response
bodies; here the Anthropic Claude Messages format is written, and Amazon Nova, Meta Llama and OpenAI-style
outputs are read as well.

The local generators write the same layout, so `parse_output_record` is the only place that turns model text
into queries, whichever model wrote it.
"""
from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass, field

ANTHROPIC_VERSION = "bedrock-2023-05-31"
QUERY_TYPES = ("factoid", "conceptual")
UNKNOWN_TYPE = "unknown"


class GeneratedQuery(str):
    """A query string that also carries its type ("factoid", "conceptual" or "unknown").

    It is a `str` (compares, hashes and serialises as the text); `.text` and `.type` name the two parts.
    """

    type: str

    def __new__(cls, text: str, type: str = UNKNOWN_TYPE) -> "GeneratedQuery":  # noqa: A002 (the field's name)
        query = super().__new__(cls, text)
        query.type = normalise_query_type(type)
        return query

    @property
    def text(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"GeneratedQuery({str(self)!r}, type={self.type!r})"

    def __reduce__(self):
        return (GeneratedQuery, (str(self), self.type))


@dataclass
class ParsedRecord:
    """One output line, read: the queries found, or why there are none."""

    record_id: str
    queries: list[GeneratedQuery] = field(default_factory=list)
    error: str | None = None            # the record failed (Bedrock `error`, or no model output at all)
    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None      # "end_turn", "max_tokens", ... when the model output says
    text: str | None = None             # the model's raw answer text
    parse_problem: str | None = None    # the model answered, but no query could be read from its text

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.queries)


# ----------------------------------------------------------------------------------------------- writing


def build_model_input(prompt: str, max_tokens: int = 512, *, temperature: float | None = None,
                      system: str | None = None) -> dict:
    """A Claude Messages request body for Bedrock (`modelInput` of a batch record)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    body: dict = {
        "anthropic_version": ANTHROPIC_VERSION,
        "max_tokens": int(max_tokens),
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}],
    }
    if system:
        body["system"] = system
    if temperature is not None:
        body["temperature"] = float(temperature)
    return body


def prompt_of(model_input: dict) -> str:
    """The user text of a Claude Messages request body (the inverse of `build_model_input`)."""
    parts = []
    for message in model_input.get("messages", []):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        else:
            parts.extend(block.get("text", "") for block in content or [] if isinstance(block, dict))
    return "\n".join(parts)


def make_input_record(record_id: str, model_input: dict) -> dict:
    """A line of a Bedrock batch inference input file."""
    return {"recordId": str(record_id), "modelInput": model_input}


def make_output_record(record_id: str, model_input: dict, text: str, input_tokens: int, output_tokens: int,
                       *, stop_reason: str = "end_turn", model: str | None = None) -> dict:
    """A successful line of a `.jsonl.out` file, with a Claude Messages response as `modelOutput`."""
    digest = hashlib.sha256(f"{record_id}\0{text}".encode()).hexdigest()[:24]
    output: dict = {
        "id": f"msg_{digest}",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": int(input_tokens), "output_tokens": int(output_tokens)},
    }
    if model:
        output["model"] = model
    return {"recordId": str(record_id), "modelInput": model_input, "modelOutput": output}


def make_error_record(record_id: str, model_input: dict, code: int | str, message: str) -> dict:
    """A failed line of a `.jsonl.out` file (Bedrock writes `error` instead of `modelOutput`)."""
    return {"recordId": str(record_id), "modelInput": model_input,
            "error": {"errorCode": code, "errorMessage": str(message)}}


def queries_json(queries) -> str:
    """The answer text the prompt asks for: `{"queries": [{"type": ..., "text": ...}, ...]}`.

    `queries` holds `GeneratedQuery`s, `(type, text)` pairs or `{"type", "text"}` dicts.
    """
    items = []
    for query in queries:
        if isinstance(query, GeneratedQuery):
            items.append({"type": query.type, "text": query.text})
        elif isinstance(query, dict):
            items.append({"type": normalise_query_type(query.get("type")), "text": str(query["text"])})
        else:
            query_type, text = query
            items.append({"type": normalise_query_type(query_type), "text": str(text)})
    return json.dumps({"queries": items}, ensure_ascii=False)


# ----------------------------------------------------------------------------------------------- reading


def parse_output_record(record: dict) -> ParsedRecord:
    """Read one `.jsonl.out` line (from Bedrock or a local generator) into queries, tokens and errors."""
    if not isinstance(record, dict):
        return ParsedRecord(record_id="", error=f"record is a {type(record).__name__}, not an object")
    record_id = str(record.get("recordId", ""))
    error = record.get("error")
    if error:
        return ParsedRecord(record_id=record_id, error=_error_text(error))
    output = record.get("modelOutput")
    if not isinstance(output, dict):
        return ParsedRecord(record_id=record_id, error="record has neither modelOutput nor error")
    text = _output_text(output)
    input_tokens, output_tokens = _usage(output)
    parsed = ParsedRecord(record_id=record_id, input_tokens=input_tokens, output_tokens=output_tokens,
                          stop_reason=_stop_reason(output), text=text)
    if text is None:
        parsed.parse_problem = "no text in modelOutput"
        return parsed
    parsed.queries = parse_queries_text(text)
    if not parsed.queries:
        parsed.parse_problem = "no queries found in the model's answer"
    return parsed


def _error_text(error) -> str:
    if isinstance(error, dict):
        code = error.get("errorCode", error.get("code"))
        message = error.get("errorMessage", error.get("message", ""))
        return f"{code}: {message}" if code is not None else str(message or error)
    return str(error)


def _output_text(output: dict) -> str | None:
    content = output.get("content")  # Claude Messages
    if isinstance(content, list):
        texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type", "text") == "text"]
        return "".join(texts)
    if isinstance(content, str):
        return content
    message = (output.get("output") or {}).get("message") if isinstance(output.get("output"), dict) else None
    if isinstance(message, dict):  # Amazon Nova (and the Converse API)
        blocks = message.get("content") or []
        return "".join(b.get("text", "") for b in blocks if isinstance(b, dict))
    choices = output.get("choices")
    if isinstance(choices, list) and choices:  # OpenAI chat completions
        first = choices[0] or {}
        message = first.get("message") or {}
        return message.get("content") if isinstance(message, dict) else first.get("text")
    if isinstance(output.get("generation"), str):  # Meta Llama on Bedrock
        return output["generation"]
    if isinstance(output.get("completion"), str):  # Claude text completions (legacy)
        return output["completion"]
    results = output.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):  # Amazon Titan text
        return results[0].get("outputText")
    return None


def _usage(output: dict) -> tuple[int | None, int | None]:
    usage = output.get("usage") or {}
    pairs = [("input_tokens", "output_tokens"), ("inputTokens", "outputTokens"),
             ("prompt_tokens", "completion_tokens")]
    for in_key, out_key in pairs:
        if in_key in usage or out_key in usage:
            return _int_or_none(usage.get(in_key)), _int_or_none(usage.get(out_key))
    if "prompt_token_count" in output or "generation_token_count" in output:  # Llama
        return _int_or_none(output.get("prompt_token_count")), _int_or_none(output.get("generation_token_count"))
    return None, None


def _stop_reason(output: dict) -> str | None:
    for key in ("stop_reason", "stopReason"):
        if output.get(key):
            return str(output[key])
    choices = output.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    return None


def _int_or_none(value) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


# -------------------------------------------------------------------------------- model text -> queries

_QUERY_KEYS_ORDERED = ("queries", "questions", "search_queries", "results", "items")
_QUERY_KEYS = frozenset(_QUERY_KEYS_ORDERED)
_TYPE_ALIASES = {
    "factoid": "factoid", "factual": "factoid", "fact": "factoid", "specific": "factoid",
    "conceptual": "conceptual", "concept": "conceptual", "concepts": "conceptual", "broad": "conceptual",
}
_FENCE = re.compile(r"```[ \t]*[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_LIST_MARKER = re.compile(r"^\s*(?:(?:[-*+\u2022]+|\(?\d{1,3}\s*[.):]|\(?[a-z]\)|#{1,6})\s+|\u30fb\s*)",  # \u30fb: the Japanese bullet
                          re.IGNORECASE)
_LABELLED = re.compile(r"^(?P<label>[^:\n]{1,50}?)\s*[:\uff1a]\s*(?P<text>.*)$")
_LABEL_WORDS = re.compile(r"\b(quer(?:y|ies)|questions?|search(?:es)?|factoid|factual|conceptual|q\d*)\b",
                          re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb\u300c\u300d\u300e\u300f"  # with CJK corner brackets


def normalise_query_type(value) -> str:
    if not isinstance(value, str):
        return UNKNOWN_TYPE
    key = value.strip().lower().replace("_query", "").replace(" query", "").replace("-", "")
    return _TYPE_ALIASES.get(key, UNKNOWN_TYPE)


def _type_in_label(label: str) -> str:
    lowered = label.lower()
    for word, query_type in _TYPE_ALIASES.items():
        if re.search(rf"\b{word}\b", lowered):
            return query_type
    return UNKNOWN_TYPE


def clean_query_text(text: str) -> str:
    """One line, no surrounding quotes or markdown emphasis; "" when no letter or digit is left."""
    text = " ".join(str(text).split())
    if not any(char.isalnum() for char in text):
        return ""
    for _ in range(3):
        stripped = text.strip().strip(_QUOTES).strip()
        stripped = re.sub(r"^\*\*|\*\*$", "", stripped).strip()
        stripped = re.sub(r"^[,;]+|[,;]+$", "", stripped).strip()
        if stripped == text:
            break
        text = stripped
    return text


def parse_queries_text(text: str) -> list[GeneratedQuery]:
    """Queries from a model's answer: JSON (fenced, wrapped in prose, with trailing commas), else labelled lines.

    JSON shapes read: `{"queries": [{"type", "text"}, ...]}`, `{"queries": ["...", ...]}`, a bare list of
    either, and `{"factoid": [...], "conceptual": [...]}`. Lines read: `Query: ...`, `Query (factoid): ...`,
    `Factoid query: ...`, and numbered or bulleted lists (a heading such as `Conceptual queries:` types the
    items under it).
    """
    if not text or not text.strip():
        return []
    for candidate, whole in _json_candidates(text):
        queries = _queries_from_json(candidate, allow_single=whole)
        if queries or (whole and isinstance(candidate, dict) and _QUERY_KEYS & set(candidate)):
            return queries  # an answer of `{"queries": []}` means: none
    return _salvage_objects(text) or _queries_from_lines(text) or _question_lines(text)


def _loads_lenient(snippet: str):
    snippet = snippet.strip()
    for attempt in (snippet, _TRAILING_COMMA.sub(r"\1", snippet)):
        try:
            return json.loads(attempt)
        except (json.JSONDecodeError, ValueError):
            pass
    try:  # single-quoted, Python-style literals that small models sometimes write
        value = ast.literal_eval(_TRAILING_COMMA.sub(r"\1", snippet))
        return value if isinstance(value, (dict, list)) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def _json_candidates(text: str):
    """`(value, is_whole_source)` for the JSON values found in the text, most likely first."""
    sources = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for source in sources:
        whole = _loads_lenient(source)
        if whole is not None:
            yield whole, True
        repaired = _TRAILING_COMMA.sub(r"\1", source)
        for start, char in enumerate(repaired):
            if char not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(repaired, start)
            except json.JSONDecodeError:
                end = _matching_bracket(repaired, start)
                value = _loads_lenient(repaired[start:end + 1]) if end is not None else None
            if isinstance(value, (dict, list)):
                yield value, False


def _matching_bracket(text: str, start: int) -> int | None:
    """Index of the bracket closing the one at `start`, skipping quoted strings (either quote)."""
    pairs = {"{": "}", "[": "]"}
    stack, quote, escaped = [], None, False
    for index in range(start, len(text)):
        char = text[index]
        if quote:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char in pairs:
            stack.append(pairs[char])
        elif char in "}]":
            if not stack or stack.pop() != char:
                return None
            if not stack:
                return index
    return None


def _queries_from_json(value, default_type: str = UNKNOWN_TYPE, allow_single: bool = True) -> list[GeneratedQuery]:
    """Queries from a decoded JSON value; a lone `{"text": ...}` object counts only if `allow_single`
    (an object found inside a longer answer is more likely one item of a list cut short: see `_salvage_objects`).
    """
    if isinstance(value, dict):
        for key in _QUERY_KEYS_ORDERED:
            if key in value:
                return _queries_from_json(value[key], default_type)
        typed: list[GeneratedQuery] = []
        for key, item in value.items():
            query_type = normalise_query_type(key)
            if query_type != UNKNOWN_TYPE or key.lower().endswith(("_queries", "queries")):
                typed.extend(_queries_from_json(item if isinstance(item, list) else [item], query_type))
        if typed or not allow_single:
            return typed
        single = _query_from_item(value, default_type)
        return [single] if single else []
    if isinstance(value, list):
        queries = []
        for item in value:
            query = _query_from_item(item, default_type)
            if query:
                queries.append(query)
        return queries
    return []


def _query_from_item(item, default_type: str) -> GeneratedQuery | None:
    if isinstance(item, str):
        text, query_type = item, default_type
    elif isinstance(item, dict):
        text = next((item[k] for k in ("text", "query", "question", "q") if isinstance(item.get(k), str)), None)
        if text is None:
            return None
        query_type = normalise_query_type(item.get("type", item.get("query_type", item.get("kind"))))
        if query_type == UNKNOWN_TYPE:
            query_type = default_type
    else:
        return None
    text = clean_query_text(text)
    return GeneratedQuery(text, query_type) if text else None


_OBJECT = re.compile(r"\{[^{}]*\}")


def _salvage_objects(text: str) -> list[GeneratedQuery]:
    """The complete `{"type", "text"}` objects of a JSON answer cut off by the token limit."""
    queries = []
    for match in _OBJECT.finditer(text):
        value = _loads_lenient(match.group(0))
        query = _query_from_item(value, UNKNOWN_TYPE) if isinstance(value, dict) else None
        if query:
            queries.append(query)
    return queries


def _queries_from_lines(text: str) -> list[GeneratedQuery]:
    queries: list[GeneratedQuery] = []
    heading_type = UNKNOWN_TYPE
    in_list_context = False
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith(("```", "{", "[", "}", "]")):
            continue
        had_marker = bool(_LIST_MARKER.match(line))
        line = _LIST_MARKER.sub("", line).strip()
        line = re.sub(r"^\*\*(.+?)\*\*", r"\1", line)  # **Query:** text -> Query: text
        labelled = _LABELLED.match(line)
        if labelled and _LABEL_WORDS.search(labelled.group("label")) and len(labelled.group("label").split()) <= 5:
            label_type = _type_in_label(labelled.group("label"))
            body = clean_query_text(labelled.group("text"))
            if body:
                queries.append(GeneratedQuery(body, label_type if label_type != UNKNOWN_TYPE else heading_type))
            else:  # a heading: "Factoid queries:" types the list below it
                heading_type = label_type
                in_list_context = True
            continue
        if had_marker and (in_list_context or _looks_like_query(line)):
            body = clean_query_text(line)
            if body:
                queries.append(GeneratedQuery(body, heading_type))
    return queries


def _looks_like_query(line: str) -> bool:
    """A bare list item counts as a query when it is short and is not a sentence of prose about the task."""
    words = line.split()
    return 1 <= len(words) <= 40 and not line.endswith(":")


def _question_lines(text: str) -> list[GeneratedQuery]:
    """Last resort: an answer of bare lines, each a question."""
    lines = [clean_query_text(line) for line in text.splitlines() if line.strip()]
    if lines and len(lines) <= 20 and all(line.endswith(("?", "\uff1f")) and len(line.split()) <= 40
                                          for line in lines):
        return [GeneratedQuery(line) for line in lines]
    return []
