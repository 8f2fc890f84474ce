"""A mixed Korean-English corpus through training_pairs: language hints, script per pair, synonym variants.

The generator records are written by hand in Bedrock's batch output layout (Claude Messages), with the real
prompt of each document as `modelInput`, as a multilingual model would have answered.
"""
import json
from pathlib import Path

from dagster import DagsterInstance, materialize

from finetune_assets.core.data.augment import load_synonyms, query_variants
from finetune_assets.core.jsonl import read_jsonl, write_jsonl
from finetune_assets.core.querygen.bedrock_records import (
    build_model_input,
    make_output_record,
    prompt_of,
    queries_json,
)
from finetune_assets.core.querygen.prompts import SYSTEM_PROMPT, build_query_prompt, max_answer_tokens
from finetune_assets.resources.storage import ArtifactStorage
from finetune_assets.stages.queries.bedrock_batch_outputs import OUTPUT_FILE
from finetune_assets.stages.training.training_pairs import training_pairs

DATA = Path(__file__).parents[1] / "data" / "mixed_ko_en"
INDEX = "mixed-ko-en"
MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"


def generator_records(documents: list[dict]) -> list[dict]:
    queries = json.loads((DATA / "queries.json").read_text(encoding="utf-8"))
    records = []
    for document in documents:
        model_input = build_model_input(build_query_prompt(document), max_answer_tokens(), system=SYSTEM_PROMPT)
        records.append(make_output_record(document["id"], model_input, queries_json(queries[document["id"]]),
                                          input_tokens=400, output_tokens=60, model=MODEL_ID))
    return records


def upstream(root: Path) -> tuple[ArtifactStorage, list[dict], list[dict]]:
    storage = ArtifactStorage(root=str(root))
    documents = list(read_jsonl(DATA / "documents.jsonl"))
    records = generator_records(documents)
    for asset, name, rows in (("raw_corpus", "documents.jsonl", documents),
                              ("bedrock_batch_outputs", OUTPUT_FILE, records)):
        folder = storage.artifact_dir(INDEX, asset)
        write_jsonl(folder / name, rows)
        storage.publish(INDEX, asset, folder)
    return storage, documents, records


def one_swap(query: str, term: str, synonym: str) -> set[str]:
    """The query with one occurrence of `term` replaced, for each occurrence."""
    starts = [i for i in range(len(query)) if query.startswith(term, i)]
    return {query[:i] + synonym + query[i + len(term):] for i in starts}


def run_pairs(storage: ArtifactStorage, config: dict):
    with DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("index", [INDEX])
        return materialize([training_pairs], partition_key=INDEX, instance=instance, raise_on_error=False,
                           resources={"storage": storage}, run_config={"ops": {"training_pairs": {"config": config}}})


def test_prompts_name_korean_for_korean_documents_only(tmp_path):
    _, documents, records = upstream(tmp_path)
    for document, record in zip(documents, records):
        prompt = prompt_of(record["modelInput"])
        assert document["text"][:40] in prompt
        if document["id"].startswith("ko-"):
            assert "This document is in Korean: write the queries in Korean." in prompt, document["id"]
        else:
            assert "This document is in" not in prompt, document["id"]


def test_training_pairs_add_cross_lingual_variants_to_training_pairs_only(tmp_path):
    storage, documents, _ = upstream(tmp_path / "storage")
    synonyms = DATA / "synonyms.tsv"
    # span_queries 0: this test follows the generated queries through augmentation
    result = run_pairs(storage, {"held_out_fraction": 0.34, "synonyms_path": str(synonyms),
                                 "max_variants_per_query": 2, "span_queries": 0})
    assert result.success
    metadata = result.asset_materializations_for_node("training_pairs")[0].metadata
    folder = storage.fetch(INDEX, "training_pairs")
    train, held_out = list(read_jsonl(folder / "train.jsonl")), list(read_jsonl(folder / "held_out.jsonl"))
    generated = {(doc_id, text): kind for doc_id, items in
                 json.loads((DATA / "queries.json").read_text(encoding="utf-8")).items() for kind, text in items}

    # the script-aware filters: a one-"word" Korean query is kept, a loop and a lone syllable are not
    assert metadata["dropped"].value == {"repeated word": 1, "too short": 1}
    assert "역색인이란" in {p["query"] for p in train + held_out}

    # every pair names its document's script; the corpus mix shows in the metadata
    scripts = {p["doc_id"]: p["script"] for p in train + held_out}
    assert scripts == {d["id"]: "hangul" if d["id"].startswith("ko-") else "latin" for d in documents}
    assert metadata["document_scripts"].value == {"hangul": 9, "latin": 3}

    # held-out pairs are the generated queries, untouched, even where they hold dictionary terms
    dictionary = load_synonyms(synonyms)
    assert held_out and all(not p.get("augmented") for p in held_out)
    assert all((p["doc_id"], p["query"]) in generated for p in held_out)
    assert any(query_variants(p["query"], dictionary) for p in held_out)
    held_docs = {p["doc_id"] for p in held_out}
    assert not held_docs & {p["doc_id"] for p in train}

    originals = [p for p in train if not p["augmented"]]
    variants = [p for p in train if p["augmented"]]
    assert all((p["doc_id"], p["query"]) in generated for p in originals)
    assert variants and metadata["synonym_variants_added"].value == len(variants)
    assert metadata["synonym_dictionary_entries"].value == dictionary.entries == 8
    assert metadata["train_pairs"].value == len(train)
    for variant in variants:
        source = (variant["doc_id"], variant["source_query"])
        assert source in generated and variant["query_type"] == generated[source]
        assert variant["query"] not in {p["query"] for p in train if p is not variant}
        term, synonym = variant["swapped"].split(" -> ")
        assert variant["query"] in one_swap(variant["source_query"], term, synonym)
    per_source = [sum(v["source_query"] == p["query"] for v in variants) for p in originals]
    assert max(per_source) == 2 and all(n <= 2 for n in per_source)
    swaps = {v["swapped"] for v in variants}
    assert "검색 -> search" in swaps or "벡터 -> vector" in swaps     # Korean to English
    assert any(v["swapped"].split(" -> ")[1] in ("검색", "데이터베이스") for v in variants)  # and back
    assert "search" in metadata["synonym_examples"].value


def test_training_pairs_without_dictionary_add_nothing(tmp_path):
    storage, _, _ = upstream(tmp_path / "storage")
    result = run_pairs(storage, {"held_out_fraction": 0.34})
    assert result.success
    metadata = result.asset_materializations_for_node("training_pairs")[0].metadata
    assert "synonym_variants_added" not in metadata
    train = list(read_jsonl(storage.fetch(INDEX, "training_pairs") / "train.jsonl"))
    assert train and all("augmented" not in p for p in train)


def test_a_malformed_dictionary_fails_the_run_naming_file_and_line(tmp_path):
    storage, _, _ = upstream(tmp_path / "storage")
    bad = tmp_path / "terms.tsv"
    bad.write_text("검색\tsearch\n벡터 vector\n", encoding="utf-8")
    result = run_pairs(storage, {"synonyms_path": str(bad)})
    assert not result.success
    error = result.get_step_failure_events()[0].event_specific_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    assert f"{bad}:2:" in "\n".join(messages)
