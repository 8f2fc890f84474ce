from finetune_assets.core.data.pairs import _in_held_out
from finetune_assets.core.data.span_queries import sentences, span_pairs

BODY = ("experimental investigation of a wing in a slipstream . a study of a wing in a propeller slipstream was "
        "made to find the spanwise lift increase . short one . the results were intended in part as an evaluation "
        "basis for different theoretical treatments of this problem .")
DOCS = [
    {"id": "1", "title": "experimental investigation of a wing in a slipstream .", "text": BODY},
    {"id": "2", "title": "Extraction of Roots by Repeated Subtractions for Digital Computers", "text": ""},
    {"id": "3", "title": "", "text": "too short . also short ."},
]


def test_sentences_split_at_latin_and_cjk_stops():
    assert sentences("one two . three four? five") == ["one two .", "three four?", "five"]
    assert sentences("검색 엔진。문서 색인") == ["검색 엔진。", "문서 색인"]


def test_span_pairs_take_body_sentences_not_the_title_and_mask_their_source():
    pairs = span_pairs(DOCS, per_document=5, held_out_fraction=0.0)
    by_doc = {}
    for pair in pairs:
        by_doc.setdefault(pair["doc_id"], []).append(pair["query"])
        assert pair["exclude_source"] is True and pair["query_type"] == "span"
    # doc 1: the two sentences of 6..30 words; the title-copy first sentence and "short one ." are left out
    assert sorted(by_doc["1"]) == sorted([
        "a study of a wing in a propeller slipstream was made to find the spanwise lift increase .",
        "the results were intended in part as an evaluation basis for different theoretical treatments of this problem ."])
    assert by_doc["2"] == [DOCS[1]["title"]]  # a title-only record gives its title
    assert "3" not in by_doc  # nothing long enough


def test_span_pairs_are_reproducible_capped_and_skip_held_out_and_seen_queries():
    first = span_pairs(DOCS, per_document=1, held_out_fraction=0.0, seed=4)
    again = span_pairs(list(reversed(DOCS)), per_document=1, held_out_fraction=0.0, seed=4)
    assert sorted(p["query"] for p in first) == sorted(p["query"] for p in again)
    assert sum(p["doc_id"] == "1" for p in first) == 1
    held = span_pairs(DOCS, per_document=5, held_out_fraction=0.5, seed=1)
    assert not {p["doc_id"] for p in held} & {d["id"] for d in DOCS if _in_held_out(d["id"], 0.5, 1)}
    seen = {DOCS[1]["title"].casefold()}
    assert "2" not in {p["doc_id"] for p in span_pairs(DOCS, per_document=5, held_out_fraction=0.0, seen=seen)}
    assert span_pairs(DOCS, per_document=0) == []
