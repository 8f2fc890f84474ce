"""benchmarks/precision_step.py's input: the documents it times, and the error that names a bad record."""
import pytest

from benchmarks.precision_step import read_texts


def test_read_texts_takes_the_first_documents_and_skips_blank_lines(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "first"}\n\n{"_id": "2", "text": "second"}\n{"_id": "3", "text": "third"}\n')
    assert read_texts(corpus, 2) == ["first", "second"]


def test_read_texts_names_the_file_and_line_of_a_record_without_text(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "first"}\n{"_id": "2", "body": "no text"}\n')
    with pytest.raises(SystemExit, match=r"corpus.jsonl: record 2 has no 'text' string"):
        read_texts(corpus, 2)


def test_read_texts_names_the_line_that_is_not_json(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "first"}\n{"_id": "2", "text": \n')
    with pytest.raises(SystemExit, match=r"corpus.jsonl:2: not valid JSON"):
        read_texts(corpus, 2)


def test_read_texts_says_how_many_documents_a_short_corpus_has(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text('{"_id": "1", "text": "only one"}\n')
    with pytest.raises(SystemExit, match="has 1 documents; the step needs 128"):
        read_texts(corpus, 128)
