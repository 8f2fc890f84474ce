"""Cross-lingual query variants from a user's bilingual synonym dictionary.

In a Korean-English corpus a searcher may type "검색" or "search" for the same thing, but the generator writes
one of them. For each training query that holds a dictionary term, a few variants with that one term swapped
("벡터 검색 원리" -> "벡터 search 원리") are added, so the model learns that the two match the same documents.

Dictionary files: TSV, `term<TAB>synonym` (more synonyms may follow in further columns; `#` starts a comment
line), or JSON, `{"term": ["synonym", ...]}` (a single string is one synonym). Entries work both ways unless
`bidirectional=False`. Latin (and other space-separated) terms match whole words, case-insensitively; Korean,
Chinese and Japanese terms match inside words (their words carry particles: "검색을", "검색하는").
Only training pairs are augmented: held-out queries stay as generated, so evaluation measures real queries.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from finetune_assets.core.data.pairs import normalize
from finetune_assets.core.languages import WORD_JOINER, is_dense


@dataclass
class SynonymDictionary:
    synonyms: dict[str, list[str]]   # normalised term -> synonyms as written in the file
    entries: int                     # term-synonym pairs in the file (before the reverse direction is added)
    path: str = ""
    _pattern: re.Pattern | None = field(default=None, repr=False, compare=False)

    @property
    def terms(self) -> int:
        return len(self.synonyms)

    def pattern(self) -> re.Pattern:
        """One regex for every term, longest first, so "vector search" wins over "search" where both match."""
        if self._pattern is None:
            alternatives = [_term_regex(t) for t in sorted(self.synonyms, key=lambda t: (-len(t), t))]
            self._pattern = re.compile("|".join(alternatives) or r"(?!)", re.IGNORECASE)
        return self._pattern


def _term_regex(term: str) -> str:
    """A term ending in a Latin (or other spaced-script) letter must not run on into a longer word there."""
    body = r"\s+".join(re.escape(part) for part in term.split())
    before = "" if is_dense(term[0]) else f"(?<!{WORD_JOINER})"
    after = "" if is_dense(term[-1]) else f"(?!{WORD_JOINER})"
    return before + body + after


def load_synonyms(path: str | Path, *, bidirectional: bool = True) -> SynonymDictionary:
    """Read a TSV or JSON (by the `.json` suffix) dictionary; a malformed entry raises naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synonyms file {path} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    pairs = _json_pairs(path, text) if path.suffix.lower() == ".json" else _tsv_pairs(path, text)
    if not pairs:
        raise ValueError(f"{path}: no synonym entries found")
    synonyms: dict[str, list[str]] = {}
    for term, synonym in pairs:
        directions = [(term, synonym), (synonym, term)] if bidirectional else [(term, synonym)]
        for source, target in directions:
            listed = synonyms.setdefault(normalize(source), [])
            if normalize(target) not in map(normalize, listed):
                listed.append(target)
    return SynonymDictionary(synonyms=synonyms, entries=len(pairs), path=str(path))


def _tsv_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        columns = [" ".join(c.split()) for c in line.rstrip("\t\r ").split("\t")]
        if len(columns) < 2 or not all(columns):
            raise ValueError(f"{path}:{number}: expected 'term<TAB>synonym' with no empty column, got {line!r}")
        pairs += [_checked(path, number, columns[0], synonym) for synonym in columns[1:]]
    return pairs


def _json_pairs(path: Path, text: str) -> list[tuple[str, str]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object {{term: [synonyms]}}, got {type(data).__name__}")
    pairs = []
    for term, value in data.items():
        number = _line_of(text, term)
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) for v in values):
            raise ValueError(f"{path}:{number}: the synonyms of {term!r} must be a string or a non-empty list of "
                             f"strings, got {value!r}")
        pairs += [_checked(path, number, " ".join(term.split()), " ".join(v.split())) for v in values]
    return pairs


def _checked(path: Path, number: int | str, term: str, synonym: str) -> tuple[str, str]:
    if not term or not synonym:
        raise ValueError(f"{path}:{number}: empty term or synonym in {term!r} -> {synonym!r}")
    if normalize(term) == normalize(synonym):
        raise ValueError(f"{path}:{number}: {term!r} is listed as its own synonym")
    return term, synonym


def _line_of(text: str, key: str) -> int | str:
    """The line where a JSON key is written (for error messages); '?' when it is written with escapes."""
    match = re.search(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:", text)
    return text.count("\n", 0, match.start()) + 1 if match else "?"


# ---------------------------------------------------------------------------------------------- variants


def query_variants(query: str, dictionary: SynonymDictionary) -> list[tuple[str, str, str]]:
    """`(variant, term, synonym)` for every swap of one dictionary term found in the query, in query order."""
    variants = []
    for match in dictionary.pattern().finditer(query):
        term = match.group()
        for synonym in dictionary.synonyms.get(normalize(term), []):
            variants.append((query[:match.start()] + synonym + query[match.end():], term, synonym))
    return variants


@dataclass
class AugmentResult:
    pairs: list[dict]          # the training pairs with their variants right after them
    added: int = 0
    pairs_with_terms: int = 0
    examples: list[dict] = field(default_factory=list)


def augment_pairs(train: list[dict], dictionary: SynonymDictionary, *, max_variants: int = 1, seed: int = 0,
                  reserved_queries: set[str] = frozenset(), max_examples: int = 10) -> AugmentResult:
    """Add up to `max_variants` swapped-term variants after each training pair (`augmented: true`, the source
    pair's other fields kept). The choice among a query's possible swaps is seeded by (seed, doc id, query),
    so it does not depend on the order of the pairs. A variant that repeats an existing query (or one of
    `reserved_queries`, normalised, such as the held-out queries) is not added."""
    if max_variants < 0:
        raise ValueError(f"max_variants must be 0 or more, got {max_variants}")
    seen = {normalize(p["query"]) for p in train} | set(reserved_queries)
    result = AugmentResult(pairs=[])
    for pair in train:
        result.pairs.append({**pair, "augmented": False})
        options = query_variants(pair["query"], dictionary)
        if options:
            result.pairs_with_terms += 1
        unique: dict[str, tuple[str, str, str]] = {}
        for option in options:  # two swaps can give the same text
            unique.setdefault(normalize(option[0]), option)
        options = [option for key, option in unique.items() if key not in seen]
        rng = random.Random(f"{seed}\0{pair.get('doc_id', '')}\0{pair['query']}")
        for variant, term, synonym in rng.sample(options, min(max_variants, len(options))):
            seen.add(normalize(variant))
            result.pairs.append({**pair, "query": variant, "augmented": True, "source_query": pair["query"],
                                 "swapped": f"{term} -> {synonym}"})
            result.added += 1
            if len(result.examples) < max_examples:
                result.examples.append({"source_query": pair["query"], "query": variant,
                                        "swapped": f"{term} -> {synonym}"})
    return result
