"""benchmarks/pool_chunks.py's input: a reproducible sample of the corpus, and errors that name the file."""
import pytest

from benchmarks.pool_chunks import sample_texts


def test_the_pool_is_a_seeded_sample_of_the_whole_corpus(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(f'{{"_id": "{i}", "text": "document {i}"}}\n' for i in range(50)))
    pool = sample_texts(corpus, 10)
    assert pool == sample_texts(corpus, 10) and len(set(pool)) == 10
    assert pool != [f"document {i}" for i in range(10)]  # drawn from all 50, not the first 10
    assert sample_texts(corpus, 10, seed=1) != pool


def test_a_corpus_smaller_than_the_pool_or_with_a_bad_record_is_named(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "only one"}\n')
    with pytest.raises(SystemExit, match="has 1 documents"):
        sample_texts(corpus, 2)
    corpus.write_text('{"_id": "1", "text": "first"}\n{"_id": "2", "body": "no text"}\n')
    with pytest.raises(SystemExit, match=r"corpus.jsonl: record 2 has no 'text' string"):
        sample_texts(corpus, 1)
