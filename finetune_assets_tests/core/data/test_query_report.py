"""The query-set report: styles, lengths, generic questions, title copies, and BM25's rank of the source."""
import pytest

from finetune_assets.core.data.query_report import is_generic, query_report, query_style

DOCUMENTS = {
    "d1": {"id": "d1", "title": "Boundary layer transition", "text": "Transition of the laminar boundary layer on "
           "a flat plate at high Mach numbers."},
    "d2": {"id": "d2", "title": "Heat transfer in nozzles", "text": "Heat transfer coefficients in rocket nozzle "
           "throats measured with thermocouples."},
    "d3": {"id": "d3", "title": "Buckling of shells", "text": "Buckling loads of thin cylindrical shells under "
           "axial compression and external pressure."},
}


def test_styles():
    assert query_style("what causes boundary layer transition?") == "question"
    assert query_style("nozzle heat transfer") == "keywords"
    assert query_style("thin shells buckle earlier under combined axial and pressure loads") == "statement"
    assert is_generic("What is the purpose of the study?") and not is_generic("what causes shell buckling")


def test_report_counts_each_figure_by_hand():
    pairs = [
        {"query": "laminar boundary layer transition Mach", "doc_id": "d1"},  # keywords? 5 words -> statement
        {"query": "rocket nozzle heat transfer", "doc_id": "d2"},  # keywords, BM25 finds it first
        {"query": "What is the purpose of the study?", "doc_id": "d3"},  # generic question, BM25 cannot find it
        {"query": "Buckling of shells", "doc_id": "d3"},  # a title copy
    ]
    report = query_report(pairs, DOCUMENTS)
    assert report.queries == 4
    assert report.styles == {"statement": 0.25, "keywords": 0.5, "question": 0.25}
    assert report.generic_share == 0.25 and report.title_copy_share == 0.25
    assert report.source_rank1_bm25 == 0.75 and report.source_top10_bm25 == 0.75  # the generic one matches nothing
    assert report.words_median == 4.5 and report.words_mean == 4.75 and report.bm25_checked == 4
    assert "BM25 ranks the source first for 75%" in report.summary()


def test_bm25_checks_a_seeded_sample_and_empty_input_is_an_error():
    pairs = [{"query": "rocket nozzle heat transfer", "doc_id": "d2"}] * 30
    assert query_report(pairs, DOCUMENTS, bm25_sample=10).bm25_checked == 10
    with pytest.raises(ValueError, match="no queries"):
        query_report([], DOCUMENTS)
