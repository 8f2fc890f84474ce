"""The prompt that asks an instruction-following model (Claude, Nova, an OpenAI-compatible server) for queries.

One prompt per document. The answer format is the JSON that `bedrock_records.parse_output_record` reads:
`{"queries": [{"type": "factoid", "text": "..."}, {"type": "conceptual", "text": "..."}]}`.
The small local model gets a few-shot completion prompt instead (see `smollm.py`).
"""
from __future__ import annotations

from finetune_assets.core.languages import language_hint

DEFAULT_MAX_DOCUMENT_CHARS = 1500
ELLIPSIS = " ..."

LANGUAGE_RULE = ("- Write every query in the same language as the document: if the document is in German, write the "
                 "queries in German; if it is in French, in French; and so on. Do not translate.")

SYSTEM_PROMPT = "You write realistic search queries for training and evaluating a search engine."

QUERY_PROMPT = """Read the document below and write {n_each} factoid {query_word} and {n_each} conceptual {query_word} that a person could type into a search engine and that this document answers.

- A factoid query asks for one specific fact stated in the document: a name, number, date, definition, measurement or result.
- A conceptual query asks about the main idea, method, cause or purpose of the document in broader words, the way a searcher who has not read it would phrase it.
{language_rule}
- Each query must make sense on its own: do not mention "the document", "the text", "the passage", "this study" or "the author".
- Keep each query under 20 words and do not copy whole sentences from the document.

<document>
{document}
</document>

Answer with JSON only, no other text, in exactly this format ({total} queries in all):
{{"queries": [{{"type": "factoid", "text": "..."}}, {{"type": "conceptual", "text": "..."}}]}}"""


def truncate_text(text: str, max_chars: int | None) -> str:
    """At most `max_chars` characters, cut at a word boundary when one is near, marked with " ..."."""
    text = _squeeze(text)
    if not max_chars or max_chars <= 0 or len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    space = max(cut.rfind(" "), cut.rfind("\n"))
    if space >= max_chars * 0.8:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + ELLIPSIS


def _squeeze(text) -> str:
    """Runs of spaces collapsed, line breaks kept (one at most in a row)."""
    lines = (" ".join(line.split()) for line in str(text or "").splitlines())
    return "\n".join(line for line in lines if line)


def document_id(document: dict) -> str:
    """`id` (or BEIR's `_id`) as a string; documents without one are refused."""
    for key in ("id", "_id"):
        value = document.get(key)
        if value is not None and str(value) != "":
            return str(value)
    raise ValueError(f"document has no 'id': {sorted(document)}")


def document_text(document: dict, max_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS) -> str:
    """Title (unless the text already starts with it) and text, truncated to `max_chars` in all."""
    title = " ".join(str(document.get("title") or "").split())
    text = " ".join(str(document.get("text") or "").split())
    if title and not text.lower().startswith(title.lower().rstrip(" .")):
        text = f"{title}\n{text}" if text else title
    return truncate_text(text, max_chars)


def build_query_prompt(document: dict, queries_per_type: int = 1,
                       max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS) -> str:
    """The user prompt for one document (factoid and conceptual queries, JSON answer, document's language)."""
    if queries_per_type < 1:
        raise ValueError(f"queries_per_type must be at least 1, got {queries_per_type}")
    body = document_text(document, max_document_chars).replace("</document>", "</ document>")
    return QUERY_PROMPT.format(
        n_each=queries_per_type, query_word="query" if queries_per_type == 1 else "queries",
        total=2 * queries_per_type, document=body, language_rule=language_rule(body))


def language_rule(text: str) -> str:
    """The prompt's language line; it names the language when the script tells it (Korean, Japanese, ...)."""
    hint = language_hint(text)
    return f"{LANGUAGE_RULE} {hint}" if hint else LANGUAGE_RULE


def max_answer_tokens(queries_per_type: int = 1) -> int:
    """A token budget for the JSON answer: about 60 tokens per query plus the wrapper."""
    return 64 + 60 * 2 * queries_per_type
