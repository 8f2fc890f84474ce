"""Writing systems of a text, from Unicode ranges: the prompt's language hint and script-aware query lengths.

No language model is involved: the dominant script names the language only where a script has one main
language (Hangul: Korean, Kana: Japanese, Han without Kana: Chinese, ...). Latin, Cyrillic or Arabic script
is shared by many languages, so for them the prompt keeps its general "same language as the document" rule.
"""
from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections import Counter

LATIN = "latin"
UNKNOWN = "unknown"

# (first, last, script); sorted by first code point.
_RANGES = sorted([
    (0x0041, 0x005A, LATIN), (0x0061, 0x007A, LATIN), (0x00C0, 0x024F, LATIN), (0x1E00, 0x1EFF, LATIN),
    (0xFF21, 0xFF3A, LATIN), (0xFF41, 0xFF5A, LATIN),
    (0x0370, 0x03FF, "greek"), (0x1F00, 0x1FFF, "greek"),
    (0x0400, 0x052F, "cyrillic"),
    (0x0590, 0x05FF, "hebrew"),
    (0x0600, 0x06FF, "arabic"), (0x0750, 0x077F, "arabic"),
    (0x0900, 0x097F, "devanagari"),
    (0x0E00, 0x0E7F, "thai"),
    (0x1100, 0x11FF, "hangul"), (0x3130, 0x318F, "hangul"), (0xA960, 0xA97F, "hangul"), (0xAC00, 0xD7FF, "hangul"),
    (0x3005, 0x3005, "han"), (0x3400, 0x4DBF, "han"), (0x4E00, 0x9FFF, "han"), (0xF900, 0xFAFF, "han"),
    (0x20000, 0x2FA1F, "han"),
    (0x3040, 0x30FF, "kana"), (0x31F0, 0x31FF, "kana"), (0xFF66, 0xFF9F, "kana"),
])
_STARTS = [first for first, _, _ in _RANGES]

# Scripts written without spaces between words (Han, Kana, Thai) or with long agglutinated words (Hangul):
# their characters are counted, not their space-separated runs.
DENSE_SCRIPTS = frozenset({"hangul", "han", "kana", "thai"})
# One dense-script character carries about what 2-3 Latin letters do (a Chinese word is 1-2 characters, a
# Korean syllable about half an English word), so it weighs 2.5 letters when the dominant script is chosen.
DENSE_WEIGHT = 2.5
# A second script with this share of the weighted letters is mentioned in the hint (a Korean text full of
# English product names, say).
SECOND_SCRIPT_SHARE = 0.15

LANGUAGES = {"hangul": "Korean", "kana": "Japanese", "han": "Chinese", "thai": "Thai", "greek": "Greek",
             "hebrew": "Hebrew"}
SCRIPT_NAMES = {LATIN: "Latin", "cyrillic": "Cyrillic", "arabic": "Arabic", "devanagari": "Devanagari"}


def char_script(char: str) -> str | None:
    """The script of one letter (None for digits, punctuation, spaces and letters of scripts not listed)."""
    code = ord(char)
    index = bisect.bisect_right(_STARTS, code) - 1
    if index < 0:
        return None
    first, last, script = _RANGES[index]
    if code > last or unicodedata.category(char)[0] not in "LM":
        return None
    return script


def script_weights(text: str) -> Counter:
    """Weighted letter counts per script (dense-script characters weigh DENSE_WEIGHT); Japanese Han counts as Kana.

    A text with Kana is Japanese, and its Han characters (kanji) belong to it rather than to a Chinese reading.
    """
    counts = Counter(s for s in map(char_script, unicodedata.normalize("NFC", str(text or ""))) if s)
    if counts["kana"] and counts["kana"] >= 0.05 * (counts["kana"] + counts["han"]):
        counts["kana"] += counts.pop("han", 0)
    return Counter({s: n * (DENSE_WEIGHT if s in DENSE_SCRIPTS else 1.0) for s, n in counts.items() if n})


def dominant_script(text: str) -> str:
    """"latin", "hangul", "kana" (Japanese), "han" (Chinese), "cyrillic", ... or "unknown" for no letters."""
    weights = script_weights(text)
    return max(sorted(weights), key=weights.get) if weights else UNKNOWN


def language_hint(text: str) -> str:
    """A sentence for the prompt that names the document's language, or "" for Latin script and no letters."""
    weights = script_weights(text)
    if not weights:
        return ""
    ranked = sorted(weights, key=lambda s: (-weights[s], s))
    script = ranked[0]
    if script == LATIN:
        return ""
    if script in LANGUAGES:
        hint = f"This document is in {LANGUAGES[script]}: write the queries in {LANGUAGES[script]}."
    else:
        name = SCRIPT_NAMES.get(script, script.title())
        hint = f"This document is written in {name} script: write the queries in its language, in {name} script."
    second = ranked[1] if len(ranked) > 1 else None
    if second and weights[second] >= SECOND_SCRIPT_SHARE * sum(weights.values()):
        other = SCRIPT_NAMES.get(second, LANGUAGES.get(second, second.title()))
        hint += f" Keep the terms it writes in {other} {'letters' if second == LATIN else 'script'} as they are."
    return hint


# ------------------------------------------------------------------------------------------ query lengths

def _class_body(scripts) -> str:
    return "".join(f"{chr(a)}-{chr(b)}" for a, b, s in _RANGES if s in scripts)


_DENSE_CLASS = _class_body(DENSE_SCRIPTS)
# A dense-script run, or a word of any other script (\w without the dense characters).
_PIECE = re.compile(f"(?P<dense>[{_DENSE_CLASS}]+)|(?P<word>[^\\W{_DENSE_CLASS}]+)")
# A letter or digit that continues a word in a space-separated script (for word-boundary checks).
WORD_JOINER = f"[^\\W_{_DENSE_CLASS}]"


def is_dense(text: str) -> bool:
    """Whether the text holds a dense-script letter (such terms are matched as substrings, not words)."""
    return any(char_script(c) in DENSE_SCRIPTS for c in text)


def _pieces(text: str):
    for match in _PIECE.finditer(unicodedata.normalize("NFC", str(text or "")).casefold()):
        yield match.lastgroup, match.group()


def word_count(text: str) -> int:
    """Words, counting every two characters of a dense-script run (Korean, Chinese, Japanese, Thai) as one:
    "倒排索引" is 2, "검색 엔진의 구조" is 1 + 2 + 1, "how does search work" is 4."""
    return sum(math.ceil(len(piece) / 2) if kind == "dense" else 1 for kind, piece in _pieces(text))


def repetition_tokens(text: str) -> list[str]:
    """Words, and the character bigrams of dense-script runs: a loop such as "索引索引索引" repeats its bigram
    the way "index index index" repeats its word."""
    tokens: list[str] = []
    for kind, piece in _pieces(text):
        if kind == "dense" and len(piece) > 2:
            tokens.extend(piece[i:i + 2] for i in range(len(piece) - 1))
        else:
            tokens.append(piece)
    return tokens
