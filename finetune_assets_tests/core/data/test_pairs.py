from finetune_assets.core.data.pairs import QueryFilter, build_pairs, document_text, title_pairs

DOCS = {
    f"d{i}": {"id": f"d{i}", "title": f"Title {i}", "text": f"Document {i} explains how boundary layers separate on wing number {i}."}
    for i in range(40)
}


def test_filters_name_each_drop_reason():
    generated = [
        ("d1", "how do boundary layers separate", "factoid"),
        ("d1", "", "factoid"),
        ("d2", "how do boundary layers separate", "conceptual"),  # duplicate of the first
        ("d3", "word " * 40, "factoid"),
        ("d4", "the the the the the", "factoid"),
        ("d5", "Title 5", "factoid"),
        ("d6", "explains how boundary layers separate on wing number 6", "factoid"),
        ("missing", "what is lift", "factoid"),
        ("d7", "lift", "factoid"),
    ]
    result = build_pairs(generated, DOCS, held_out_fraction=0.0)
    assert result.queries_in == 9
    assert [p["query"] for p in result.train] == ["how do boundary layers separate"]
    assert result.dropped == {"empty": 1, "duplicate query": 1, "too long": 1, "repeated word": 1,
                              "copy of the title": 1, "copy of the document": 1, "unknown document id": 1,
                              "too short": 1}
    assert {e["reason"] for e in result.dropped_examples} == set(result.dropped)


def test_split_is_by_document_and_reproducible():
    generated = [(f"d{i}", f"question {j} about wing {i} separation", "factoid") for i in range(40) for j in range(2)]
    first = build_pairs(generated, DOCS, held_out_fraction=0.3, seed=1)
    again = build_pairs(list(reversed(generated)), DOCS, held_out_fraction=0.3, seed=1)
    train_docs = {p["doc_id"] for p in first.train}
    held_docs = {p["doc_id"] for p in first.held_out}
    assert train_docs and held_docs and not train_docs & held_docs
    assert held_docs == {p["doc_id"] for p in again.held_out}
    assert 4 <= len(held_docs) <= 20
    other = build_pairs(generated, DOCS, held_out_fraction=0.3, seed=2)
    assert {p["doc_id"] for p in other.held_out} != held_docs


def test_document_text_prepends_title_once():
    assert document_text({"title": "Wings", "text": "Lift."}) == "Wings\nLift."
    assert document_text({"title": "Wings", "text": "wings and lift"}) == "wings and lift"
    assert QueryFilter().problem("what is lift on wings", {"title": "", "text": "x"}) is None


def test_title_pairs_use_the_body_alone_and_skip_held_out_untitled_and_seen_titles():
    documents = [
        {"id": "1", "title": "Wing flutter at high speed", "text": "Wing flutter at high speed . Tests on a model wing."},
        {"id": "2", "title": "", "text": "No title here."},
        {"id": "3", "title": "Only a title here", "text": "Only a title here"},  # a title-only record
        {"id": "4", "title": "Boundary layer transition", "text": "Measured on a flat plate."},
        {"id": "5", "title": "Heat", "text": "One word titles are too short."},
        {"id": "6", "title": "Already asked title", "text": "A body."},
    ]
    pairs = title_pairs(documents, held_out_fraction=0.0, seen={"already asked title"})
    assert [(p["doc_id"], p["query"], p["positive"]) for p in pairs] == [
        ("1", "Wing flutter at high speed", "Tests on a model wing."),
        ("4", "Boundary layer transition", "Measured on a flat plate.")]
    assert {p["query_type"] for p in pairs} == {"title"}
    # the held-out split is the one build_pairs uses, so no held-out document lends its title to training
    everything_held_out = title_pairs(documents, held_out_fraction=1.0)
    assert everything_held_out == []
    generated = build_pairs([(d["id"], "what is measured on a flat plate", "factoid") for d in documents[3:4]],
                            {d["id"]: d for d in documents}, held_out_fraction=0.5, seed=3)
    held_out_ids = {p["doc_id"] for p in generated.held_out}
    assert not held_out_ids & {p["doc_id"] for p in title_pairs(documents, held_out_fraction=0.5, seed=3)}
