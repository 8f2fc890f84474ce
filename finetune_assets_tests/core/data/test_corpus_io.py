"""Corpus reading: every bad input is quarantined with its file, line and reason; nothing is dropped silently."""
from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from finetune_assets.core.data.corpus_io import (
    CorpusError,
    CorpusReadResult,
    find_corpus_files,
    read_corpus,
    write_quarantine,
)
from finetune_assets.core.data.sampling import reservoir_sample, sample_documents

CRANFIELD = Path("/work/shared/ir-data/cranfield/corpus.jsonl")


def write_lines(path: Path, lines: list[bytes | dict | str]) -> Path:
    """Each entry is one line: a dict is JSON-encoded, str is UTF-8 encoded, bytes are written as they are."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            if isinstance(line, str):
                line = line.encode("utf-8")
            out.write(line + b"\n")
    return path


def check_accounting(result: CorpusReadResult) -> None:
    assert result.records_read == len(result.documents) + len(result.quarantined)
    ids = [d["id"] for d in result.documents]
    assert len(ids) == len(set(ids))
    for doc in result.documents:
        assert set(doc) == {"id", "text", "title"}
        assert isinstance(doc["id"], str) and isinstance(doc["text"], str) and isinstance(doc["title"], str)
        assert doc["text"].strip()


def quarantined_at(result: CorpusReadResult) -> dict[int | None, str]:
    return {entry.line: entry.reason for entry in result.quarantined}


def doc(i: int, **extra) -> dict:
    return {"_id": f"d{i}", "title": f"Title {i}", "text": f"Document number {i} is about wings.", **extra}


# ------------------------------------------------------------------------------------------ locations


def test_missing_location_names_the_path(tmp_path):
    with pytest.raises(CorpusError, match="nowhere.*does not exist"):
        read_corpus(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    with pytest.raises(CorpusError, match="is empty"):
        find_corpus_files(tmp_path)


def test_folder_without_supported_files_lists_what_was_found(tmp_path):
    (tmp_path / "notes.csv").write_text("a,b\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.xml").write_text("<x/>")
    with pytest.raises(CorpusError, match=r"found 2 other file\(s\): notes.csv, sub/data.xml"):
        read_corpus(tmp_path)


def test_unsupported_single_file(tmp_path):
    path = tmp_path / "corpus.csv"
    path.write_text("id,text\n")
    with pytest.raises(CorpusError, match="unsupported type '.csv'"):
        find_corpus_files(path)


def test_folder_is_searched_recursively_sorted_and_hidden_files_skipped(tmp_path):
    write_lines(tmp_path / "b.jsonl", [doc(1)])
    write_lines(tmp_path / "a" / "z.ndjson", [doc(2)])
    write_lines(tmp_path / "a" / "y.JSON", [doc(3)])
    write_lines(tmp_path / ".hidden.jsonl", [doc(4)])
    write_lines(tmp_path / ".git" / "x.jsonl", [doc(5)])
    (tmp_path / "readme.md").write_text("not a corpus")
    files = find_corpus_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/y.JSON", "a/z.ndjson", "b.jsonl"]
    result = read_corpus(tmp_path)
    assert [d["id"] for d in result.documents] == ["d3", "d2", "d1"]
    assert result.files == [str(f) for f in files]


def test_empty_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"")
    with pytest.raises(CorpusError, match=r"docs.jsonl.*hold no records"):
        read_corpus(path)


def test_blank_lines_are_not_records(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [doc(1), b"", b"   ", doc(2)])
    result = read_corpus(path)
    assert result.records_read == 2 and not result.quarantined


# ---------------------------------------------------------------------------------------- JSON lines


def test_bad_lines_among_good_ones_are_quarantined_with_line_numbers(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        doc(1),                                                   # 1
        b'{"_id": "broken", "text": "no closing brace"',          # 2 malformed
        doc(2),                                                   # 3
        {"_id": "no-text", "other": "no title either"},           # 4 missing text
        {"_id": "int-text", "text": 42},                          # 5 not a string
        {"_id": "blank", "text": "  \n\t "},                      # 6 empty
        b'{"_id": "latin1", "text": "caf\xe9 au lait"}',          # 7 not UTF-8
        b'["an", "array"]',                                       # 8 not an object
        {"_id": "null-text", "text": None},                       # 9 null
        doc(3),                                                   # 10
    ])
    result = read_corpus(path)
    check_accounting(result)
    assert [d["id"] for d in result.documents] == ["d1", "d2", "d3"]
    assert result.records_read == 10
    reasons = quarantined_at(result)
    assert set(reasons) == {2, 4, 5, 6, 7, 8, 9}
    assert reasons[2].startswith("malformed JSON (Expecting ',' delimiter")
    assert reasons[4] == "missing text field 'text'"
    assert reasons[5] == "text field 'text' is not a string (got int)"
    assert reasons[6] == "text field 'text' is empty"
    assert reasons[7] == "not valid UTF-8 (byte 0xe9 at byte offset 30: invalid continuation byte)"
    assert reasons[8] == "JSON value is array, not an object"
    assert reasons[9] == "text field 'text' is null"
    by_line = {e.line: e for e in result.quarantined}
    assert all(e.source == str(path) for e in result.quarantined)
    assert by_line[4].record_id == "no-text" and by_line[2].record_id is None
    assert by_line[7].raw == '{"_id": "latin1", "text": "caf\ufffd au lait"}'
    assert by_line[2].raw == '{"_id": "broken", "text": "no closing brace"'


def test_title_only_records_are_documents(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        {"_id": "t1", "title": "Extraction of Roots by Repeated Subtractions", "text": ""},
        {"_id": "t2", "title": "Matrix Program Schemes"},
        {"_id": "t3", "title": "  ", "text": ""},
        {"_id": "t4", "title": "Matrix program   schemes", "text": None},
    ])
    result = read_corpus(path)
    check_accounting(result)
    assert result.documents == [
        {"id": "t1", "text": "Extraction of Roots by Repeated Subtractions", "title": ""},
        {"id": "t4", "text": "Matrix program   schemes", "title": ""},
    ]
    assert quarantined_at(result) == {
        2: "duplicate text of document 't4' (kept docs.jsonl:4: longer text, 24 vs 22 chars)",
        3: "text field 'text' is empty"}


def test_raw_is_truncated(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [doc(1), {"_id": "x", "body": "y" * 2000}])
    (entry,) = read_corpus(path).quarantined
    assert len(entry.raw) == 500 and entry.raw.startswith('{"_id": "x"')


def test_duplicate_ids_and_texts(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        doc(1),                                                               # 1 loses to line 3 (shorter)
        doc(2),                                                               # 2
        {"_id": "d1", "text": "A different text with the same id."},          # 3 duplicate id, longer: kept
        {"_id": "d9", "text": "  DOCUMENT number 1\tis   about WINGS. "},     # 4 its twin (line 1) is gone: kept
        {"_id": "d8", "text": "document number 2 is about wings."},           # 5 duplicate text of d2, same length
        doc(3),                                                               # 6
        doc(2),                                                               # 7 the same document as line 2
    ])
    result = read_corpus(path)
    check_accounting(result)
    assert [d["id"] for d in result.documents] == ["d2", "d1", "d9", "d3"]
    same_length = "same text length, smaller SHA-256 of its canonical JSON"
    assert quarantined_at(result) == {
        1: "duplicate id 'd1' (kept docs.jsonl:3: longer text, 34 vs 33 chars)",
        5: f"duplicate text of document 'd2' (kept docs.jsonl:2: {same_length})",
        7: "duplicate id 'd2' (kept docs.jsonl:2: the same document)",
    }
    assert result.duplicate_ids == 2 and result.duplicate_texts == 1
    by_line = {e.line: e for e in result.quarantined}
    assert [e.line for e in result.quarantined] == [1, 5, 7]                 # in reading order
    assert json.loads(by_line[1].raw) == doc(1) and by_line[1].kind == "duplicate id"  # the loser's own record
    assert json.loads(by_line[5].raw)["_id"] == "d8" and by_line[5].kind == "duplicate text"


def test_same_length_duplicates_are_decided_by_sha256_of_canonical_json(tmp_path):
    from finetune_assets.core.data.corpus_io import canonical_json

    first = {"_id": "x", "title": "A", "text": "same length text one"}
    second = {"_id": "x", "title": "B", "text": "same length text two"}
    write_lines(tmp_path / "docs.jsonl", [first, second])
    kept = read_corpus(tmp_path / "docs.jsonl").documents
    candidates = [{"id": "x", "title": d["title"], "text": d["text"]} for d in (first, second)]
    assert kept == [min(candidates, key=lambda d: hashlib.sha256(canonical_json(d)).digest())]
    assert canonical_json(candidates[0]) == b'{"id":"x","text":"same length text one","title":"A"}'


def _shuffled_corpus(folder: Path, records: list[dict], files: int, seed: int) -> None:
    """`records` spread over `files` JSONL files (a.jsonl, b.jsonl, ...) in an order drawn with `seed`."""
    order = list(records)
    random.Random(seed).shuffle(order)
    for number in range(files):
        write_lines(folder / f"{'abc'[number]}.jsonl", order[number::files])


def test_which_duplicate_is_kept_does_not_depend_on_file_or_line_order(tmp_path):
    records = [doc(i) for i in range(30)]
    records += [{"_id": f"d{i}", "title": "dup", "text": f"Document number {i} is about wings and more."}
                for i in range(0, 30, 3)]                                    # longer twins of every third id
    records += [{"_id": f"d{i}", "title": f"tie {i}", "text": f"Document number {i} is about birds."}
                for i in range(1, 30, 3)]                                    # twins of the same text length
    records += [{"_id": f"t{i}", "text": f"document NUMBER {i}  is about wings."} for i in range(2, 30, 3)]
    forward = tmp_path / "forward"
    write_lines(forward / "a.jsonl", records[: len(records) // 2])
    write_lines(forward / "b.jsonl", records[len(records) // 2:])
    backward = tmp_path / "backward"                                         # files swapped, lines reversed
    write_lines(backward / "a.jsonl", records[len(records) // 2:][::-1])
    write_lines(backward / "b.jsonl", records[: len(records) // 2][::-1])

    def kept(folder: Path) -> list[dict]:
        result = read_corpus(folder)
        check_accounting(result)
        assert (result.duplicate_ids, result.duplicate_texts) == (20, 10)
        return sorted(result.documents, key=lambda d: d["id"])

    expected = kept(forward)
    assert kept(backward) == expected
    for seed in range(3):
        _shuffled_corpus(tmp_path / f"shuffled-{seed}", records, files=3, seed=seed)
        assert kept(tmp_path / f"shuffled-{seed}") == expected
    by_id = {d["id"]: d for d in expected}
    assert by_id["d0"]["text"] == "Document number 0 is about wings and more."   # the longest text wins
    assert "t2" in by_id and "d2" not in by_id                                    # padded twin is longer
    assert by_id["d1"]["title"] in ("Title 1", "tie 1")


def test_deduplicate_applies_the_same_rule_to_documents_in_memory():
    from finetune_assets.core.data.corpus_io import deduplicate

    documents = [{"id": "a", "text": "short", "title": ""}, {"id": "b", "text": "Other text", "title": ""},
                 {"id": "a", "text": "much longer", "title": ""}, {"id": "c", "text": "other   TEXT", "title": ""}]
    kept, dropped = deduplicate(documents)
    assert kept == [documents[2], documents[3]]
    assert [(d["id"], k["id"], kind) for d, k, kind, _ in dropped] == [("a", "a", "duplicate id"),
                                                                      ("b", "c", "duplicate text")]
    assert deduplicate(documents[::-1])[0] == [documents[3], documents[2]]


def test_duplicate_id_across_files_names_the_file_kept(tmp_path):
    write_lines(tmp_path / "a.jsonl", [doc(1), doc(2)])
    write_lines(tmp_path / "sub" / "b.jsonl", [doc(3), {"_id": "d2", "text": "other"}])
    result = read_corpus(tmp_path)
    (entry,) = result.quarantined
    assert (entry.source, entry.line) == (str(tmp_path / "sub" / "b.jsonl"), 2)
    assert entry.reason == "duplicate id 'd2' (kept a.jsonl:2: longer text, 33 vs 5 chars)"


def test_int_ids_and_id_field_fallbacks(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        {"id": 7, "text": "seven"},                    # 1 int id
        {"doc_id": "x", "text": "ex"},                 # 2 doc_id
        {"text": "no id at all"},                      # 3 generated
        {"_id": "", "text": "empty id"},               # 4 empty id -> generated
        {"_id": ["a"], "text": "list id"},             # 5 bad id
        {"_id": 7, "text": "seven again"},             # 6 duplicate of int id 7
        {"_id": 8.0, "text": "eight"},                 # 7 integral float (e.g. from pandas) -> "8"
        {"_id": 8.5, "text": "eight and a half"},      # 8 bad id
    ])
    result = read_corpus(path)
    check_accounting(result)
    assert [d["id"] for d in result.documents] == ["x", "docs.jsonl:3", "docs.jsonl:4", "7", "8"]
    assert quarantined_at(result) == {1: "duplicate id '7' (kept docs.jsonl:6: longer text, 11 vs 5 chars)",
                                      5: "id field '_id' is not a string or integer (got array)",
                                      8: "id field '_id' is not a string or integer (got float)"}


def test_generated_ids_are_stable(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [{"text": "first"}, {"text": "second"}])
    assert read_corpus(path).documents == read_corpus(path).documents
    assert [d["id"] for d in read_corpus(path).documents] == ["docs.jsonl:1", "docs.jsonl:2"]


def test_explicit_id_field_nested_text_and_title(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        {"key": "k1", "body": {"content": "Nested body one."}, "meta": {"name": "One"}},       # 1
        {"key": "k2", "body": {"content": "Nested body two."}, "abstract": "Abstract two."},    # 2
        {"key": "k3", "body": "not an object"},                                                 # 3
        {"key": "k4", "body": {"content": 5}},                                                  # 4
    ])
    result = read_corpus(path, id_field="key", text_fields=["body.content"], title_field="meta.name")
    check_accounting(result)
    assert result.documents == [{"id": "k1", "text": "Nested body one.", "title": "One"},
                                {"id": "k2", "text": "Nested body two.", "title": ""}]
    assert quarantined_at(result) == {3: "missing text field 'body.content'",
                                      4: "text field 'body.content' is not a string (got int)"}
    joined = read_corpus(path, id_field="key", text_fields=("abstract", "body.content"), title_field=None)
    assert joined.documents[1] == {"id": "k2", "text": "Abstract two.\nNested body two.", "title": ""}
    assert quarantined_at(joined)[3] == "missing text field 'abstract'; missing text field 'body.content'"


def test_control_characters_are_stripped(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [
        {"_id": "c", "title": "T\x00itle", "text": "a\x00b\x07c\r\nd\te\x1f"},
        {"_id": "only-controls", "text": "\x00\x01\x02"},
        {"_id": "surrogate", "text": "bad \ud800 half"},
    ])
    result = read_corpus(path)
    assert result.documents[0] == {"id": "c", "text": "abc\nd\te", "title": "Title"}
    assert result.documents[1]["text"] == "bad  half"
    assert quarantined_at(result) == {2: "text field 'text' is empty"}
    write_quarantine(tmp_path / "q.jsonl", result.quarantined)
    from finetune_assets.core.jsonl import write_jsonl
    write_jsonl(tmp_path / "out.jsonl", result.documents)  # lone surrogates would fail here


def test_min_chars(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [{"_id": "a", "text": "tiny"}, doc(1)])
    result = read_corpus(path, min_chars=10)
    assert quarantined_at(result) == {1: "text too short (4 chars, minimum 10)"}


def test_utf8_bom_is_ignored(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc(1)).encode() + b"\n")
    assert [d["id"] for d in read_corpus(path).documents] == ["d1"]


def test_nothing_valid_raises_with_counts_and_reasons(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [{"_id": "a", "body": "x"}, {"_id": "b", "body": "y"}, b"{bad"])
    with pytest.raises(CorpusError) as info:
        read_corpus(path)
    message = str(info.value)
    assert str(path) in message
    assert "read 3 record(s)" in message
    assert "2 x missing text" in message and "missing text field 'text'" in message
    assert "1 x malformed json" in message
    assert "set text_fields" in message


def test_write_quarantine_round_trips(tmp_path):
    path = write_lines(tmp_path / "docs.jsonl", [doc(1), b"{oops", {"_id": "n"}])
    result = read_corpus(path)
    out = tmp_path / "out" / "quarantine.jsonl"
    assert write_quarantine(out, result.quarantined) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["line"], r["record_id"], r["source"]) for r in rows] == [(2, None, str(path)), (3, "n", str(path))]
    assert rows[1]["reason"] == "missing text field 'text'" and rows[1]["raw"] == '{"_id": "n"}'
    assert {"source", "line", "record_id", "reason", "raw"} <= set(rows[0])


def test_beir_cranfield_layout():
    if not CRANFIELD.exists():
        pytest.skip("cranfield corpus not available")
    result = read_corpus(CRANFIELD)
    check_accounting(result)
    assert result.records_read == 1400
    assert len(result.documents) == 1398
    first = result.documents[0]
    assert first["id"] == "1"
    assert first["title"] == "experimental investigation of the aerodynamics of a wing in a slipstream ."
    assert first["text"].startswith("experimental investigation of the aerodynamics")
    # cranfield holds two records with an empty text (lines 471 and 995, ids "471" and "995")
    assert {(e.line, e.record_id, e.reason) for e in result.quarantined} == {
        (471, "471", "text field 'text' is empty"), (995, "995", "text field 'text' is empty")}
    assert result.duplicate_ids == 0 and result.duplicate_texts == 0


# ---------------------------------------------------------------------------------------- plain text


def test_txt_line_mode(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"first line\n\n  \nsecond line\ncaf\xe9\nFIRST   line\n\x00\x01\nlast")
    result = read_corpus(path)
    check_accounting(result)
    assert result.documents == [{"id": "notes:4", "text": "second line", "title": ""},
                                {"id": "notes:6", "text": "FIRST   line", "title": ""},
                                {"id": "notes:8", "text": "last", "title": ""}]
    assert quarantined_at(result) == {1: "duplicate text of document 'notes:6' (kept notes.txt:6: longer text, "
                                         "12 vs 10 chars)",
                                      5: "not valid UTF-8 (byte 0xe9 at byte offset 3: invalid continuation byte)",
                                      7: "text line is empty"}
    assert {e.line: e.record_id for e in result.quarantined} == {1: "notes:1", 5: "notes:5", 7: "notes:7"}
    assert result.quarantined[0].raw == "first line"


def test_txt_file_mode(tmp_path):
    (tmp_path / "a.txt").write_text("Whole file one.\nSecond line.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("Whole file two.")
    (tmp_path / "sub" / "empty.txt").write_text("\n  \n")
    (tmp_path / "sub" / "latin.txt").write_bytes(b"ok\nna\xefve")
    result = read_corpus(tmp_path, txt_mode="file")
    check_accounting(result)
    assert result.documents == [{"id": "a.txt", "text": "Whole file one.\nSecond line.", "title": ""},
                                {"id": "sub/b.txt", "text": "Whole file two.", "title": ""}]
    assert {(e.record_id, e.line, e.reason) for e in result.quarantined} == {
        ("sub/empty.txt", None, "text file is empty"),
        ("sub/latin.txt", None, "not valid UTF-8 (byte 0xef at byte offset 5: invalid continuation byte)"),
    }


def test_bad_txt_mode(tmp_path):
    write_lines(tmp_path / "docs.jsonl", [doc(1)])
    with pytest.raises(ValueError, match="txt_mode"):
        read_corpus(tmp_path, txt_mode="paragraph")


# ---------------------------------------------------------------------------------------- JSON arrays


def test_json_array_file_is_a_list_of_documents(tmp_path):
    path = tmp_path / "docs.json"
    records = [doc(1), {"text": "no id here"}, {"_id": "d3", "body": "no text field"}, "not an object",
               {"_id": "d1", "text": "Document number 1 is about wings and tails."}]
    path.write_text("\ufeff  " + json.dumps(records, indent=2))                # BOM, spaces, pretty-printed
    result = read_corpus(path)
    check_accounting(result)
    assert [d["id"] for d in result.documents] == ["docs.json:2", "d1"]        # generated ids: element number
    assert quarantined_at(result) == {
        1: "duplicate id 'd1' (kept docs.json:5: longer text, 43 vs 33 chars)",
        3: "missing text field 'text'",
        4: "JSON value is str, not an object",
    }
    assert json.loads(result.quarantined[0].raw) == doc(1)                   # re-read from the array


def test_json_lines_stay_json_lines_whatever_the_suffix(tmp_path):
    write_lines(tmp_path / "a.json", [doc(1), doc(2)])
    write_lines(tmp_path / "b.json", [json.dumps(["an", "array", "per", "line"]), doc(3)])  # starts with "[", still lines
    result = read_corpus(tmp_path)
    check_accounting(result)
    assert [d["id"] for d in result.documents] == ["d1", "d2", "d3"]
    assert [(e.source, e.line, e.reason) for e in result.quarantined] == [
        (str(tmp_path / "b.json"), 1, "JSON value is array, not an object")]


def test_broken_json_array_is_one_quarantined_file_with_the_position(tmp_path):
    (tmp_path / "docs.json").write_text('[{"_id": "a", "text": "one"},\n {"_id": "b", "text": "two"\n')
    with pytest.raises(CorpusError) as info:
        read_corpus(tmp_path / "docs.json")
    assert (f"1 x malformed json (e.g. {tmp_path / 'docs.json'}: malformed JSON array (Expecting ',' delimiter at "
            f"line 3 column 1); nothing in this file was read)") in str(info.value)


def test_cli_reads_a_json_array_corpus(tmp_path, capsys):
    from finetune_assets import cli

    path = tmp_path / "corpus.json"
    path.write_text(json.dumps([doc(i) for i in range(3)], indent=2))
    code = cli.main(["estimate", str(path)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"3 valid documents in {path}; 3 sampled" in captured.out
    assert "malformed json" not in captured.out + captured.err and "Traceback" not in captured.err


# ------------------------------------------------------------------------------------------- parquet


def test_parquet_with_null_text_and_int_ids(tmp_path):
    path = tmp_path / "docs.parquet"
    table = pa.table({
        "doc_id": [1, 2, 3, 4, 2],
        "text": ["one text", None, "three text", "", "two again"],
        "title": ["One", None, None, "", "Two"],
        "extra": [1.0, 2.0, 3.0, 4.0, 5.0],
    })
    pq.write_table(table, path, row_group_size=2)
    result = read_corpus(path)
    check_accounting(result)
    # row 2 is quarantined, so its id stays free for row 5
    assert result.documents == [{"id": "1", "text": "one text", "title": "One"},
                                {"id": "3", "text": "three text", "title": ""},
                                {"id": "2", "text": "two again", "title": "Two"}]
    assert quarantined_at(result) == {2: "text field 'text' is null", 4: "text field 'text' is empty"}
    # with a title, a row without body text is kept under its title
    pq.write_table(pa.table({"_id": ["a", "b"], "text": [None, "y"], "title": ["Alpha", "Beta"]}),
                   tmp_path / "titled.parquet")
    assert read_corpus(tmp_path / "titled.parquet").documents == [{"id": "a", "text": "Alpha", "title": ""},
                                                                  {"id": "b", "text": "y", "title": "Beta"}]
    pq.write_table(pa.table({"_id": ["a", "b", "a"], "text": ["x", "y", "zz"]}), tmp_path / "dup.parquet")
    dup = read_corpus(tmp_path / "dup.parquet")
    assert quarantined_at(dup) == {1: "duplicate id 'a' (kept dup.parquet:3: longer text, 2 vs 1 chars)"}
    assert json.loads(dup.quarantined[0].raw) == {"_id": "a", "text": "x"}
    by_row = {e.line: e for e in result.quarantined}
    assert json.loads(by_row[2].raw) == {"doc_id": 2, "text": None, "title": None}


def test_parquet_nested_text_and_missing_column(tmp_path):
    path = tmp_path / "nested.parquet"
    pq.write_table(pa.table({"_id": ["a", "b"], "body": [{"content": "alpha"}, {"content": None}]}), path)
    result = read_corpus(path, text_fields=["body.content"])
    assert result.documents == [{"id": "a", "text": "alpha", "title": ""}]
    assert quarantined_at(result) == {2: "text field 'body.content' is null"}
    with pytest.raises(CorpusError, match="2 x missing text"):
        read_corpus(path)


def test_corrupt_parquet_is_quarantined_not_fatal(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    write_lines(tmp_path / "good.jsonl", [doc(1)])
    result = read_corpus(tmp_path)
    check_accounting(result)
    (entry,) = result.quarantined
    assert entry.source.endswith("bad.parquet") and entry.line is None
    assert entry.reason.startswith("cannot read parquet file")


def test_mixed_formats_in_one_folder(tmp_path):
    write_lines(tmp_path / "a.jsonl", [doc(1)])
    pq.write_table(pa.table({"_id": ["p1"], "text": ["from parquet"]}), tmp_path / "b.parquet")
    (tmp_path / "c.txt").write_text("from text\n")
    result = read_corpus(tmp_path)
    assert [d["id"] for d in result.documents] == ["d1", "p1", "c:1"]


def test_core_modules_do_not_import_dagster_or_boto3():
    code = ("import sys, finetune_assets.core.data.corpus_io, finetune_assets.core.data.sampling; "
            "print(sorted(m for m in ('dagster', 'boto3') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------------------------------ sampling


DOCS = [{"id": f"doc-{i}", "text": f"text {i}", "title": ""} for i in range(200)]


def test_sample_is_reproducible_and_independent_of_input_order():
    shuffled = DOCS[:]
    random.Random(1).shuffle(shuffled)
    first = sample_documents(DOCS, 20, seed=13)
    assert len(first) == 20
    assert sample_documents(shuffled, 20, seed=13) == first
    assert sample_documents(DOCS, 20, seed=13) == first


def test_sample_differs_across_seeds_and_is_nested():
    a, b = sample_documents(DOCS, 20, seed=1), sample_documents(DOCS, 20, seed=2)
    assert {d["id"] for d in a} != {d["id"] for d in b}
    assert sample_documents(DOCS, 30, seed=1)[:20] == a


def test_sample_all_is_hash_ordered_permutation():
    everything = sample_documents(DOCS, None, seed=5)
    assert sorted(d["id"] for d in everything) == sorted(d["id"] for d in DOCS)
    assert everything != DOCS
    assert sample_documents(DOCS, 10_000, seed=5) == everything
    assert sample_documents(DOCS, 0, seed=5) == []
    with pytest.raises(ValueError):
        sample_documents(DOCS, -1, seed=5)


def test_reservoir_sample():
    first = reservoir_sample(iter(range(1000)), 10, seed=3)
    assert len(first) == 10 and len(set(first)) == 10
    assert reservoir_sample(range(1000), 10, seed=3) == first
    assert reservoir_sample(range(1000), 10, seed=4) != first
    assert reservoir_sample(range(5), 10, seed=3) == [0, 1, 2, 3, 4]
    assert reservoir_sample(range(5), 0, seed=3) == []
    # roughly uniform: every item of a short stream gets picked over many seeds
    picked = {x for seed in range(200) for x in reservoir_sample(range(20), 2, seed)}
    assert picked == set(range(20))


# ------------------------------------------------------------------------------ sampling while streaming


def _sampled_corpus(tmp_path: Path, shuffle_seed: int, repeated_text: bool = True) -> Path:
    """300 documents over three files, 20 of them with a duplicate id (the longer text wins) and, with
    `repeated_text`, 100 more documents sharing one text, in an order that `shuffle_seed` shuffles."""
    records = [{"id": f"d{i}", "text": f"unique paragraph number {i} about topic {i % 7}"} for i in range(300)]
    records += [{"id": f"d{i}", "text": f"unique paragraph number {i} about topic {i % 7}, longer"} for i in range(20)]
    if repeated_text:
        records += [{"id": f"s{i}", "text": "The same  text, repeated"} for i in range(100)]
    random.Random(shuffle_seed).shuffle(records)
    folder = tmp_path / f"corpus{shuffle_seed}{repeated_text}"
    for part in range(3):
        write_lines(folder / f"part{part}.jsonl", records[part::3])
    return folder


@pytest.mark.parametrize("size,seed", [(5, 0), (50, 0), (100, 3), (250, 1)])
def test_a_streamed_sample_equals_the_sample_of_the_whole_corpus_whatever_the_order(tmp_path, size, seed):
    # Duplicate ids are always resolved as in the whole corpus: twins share their hash, so both compete.
    whole = read_corpus(_sampled_corpus(tmp_path, 0, repeated_text=False))
    for order in (0, 1):
        streamed = read_corpus(_sampled_corpus(tmp_path, order, repeated_text=False), max_documents=size, seed=seed)
        assert streamed.documents == sample_documents(whole.documents, size, seed)
        assert streamed.records_read == 320 == (len(streamed.documents) + len(streamed.quarantined)
                                                + streamed.not_sampled)
        assert {e.record_id for e in streamed.quarantined} <= {e.record_id for e in whole.quarantined}
        assert all(e.kind == "duplicate id" for e in streamed.quarantined)


@pytest.mark.parametrize("size,seed", [(5, 0), (100, 3)])
def test_a_repeated_text_is_sampled_once_and_the_sample_does_not_depend_on_file_order(tmp_path, size, seed):
    # A repeated text is resolved among the copies that compete for the sample, so which copy is sampled may
    # differ from the whole corpus' winner; the sample still holds one copy and ignores the order of records.
    samples = [read_corpus(_sampled_corpus(tmp_path, order), max_documents=size, seed=seed) for order in (0, 1)]
    assert samples[0].documents == samples[1].documents and len(samples[0].documents) == size
    assert sum(d["text"] == "The same  text, repeated" for d in samples[0].documents) <= 1
    assert samples[0].records_read == 420 == (len(samples[0].documents) + len(samples[0].quarantined)
                                              + samples[0].not_sampled)


def test_a_sample_left_short_by_duplicates_reads_the_files_again_with_a_larger_window(tmp_path):
    # 100 copies of one text among 300 other documents: the first window (125 ids) holds about 30 copies, so
    # deduplicating it leaves fewer than 100 documents; the files are read again with a window of 500, which
    # holds every id, so the sample is then exactly the whole corpus' sample.
    folder = _sampled_corpus(tmp_path, 0)
    import finetune_assets.core.data.corpus_io as corpus_io

    windows = []
    original = corpus_io._read_files

    def spy(files, window, seed, **options):
        windows.append(window)
        return original(files, window, seed, **options)

    corpus_io._read_files = spy
    try:
        streamed = read_corpus(folder, max_documents=100, seed=0)
    finally:
        corpus_io._read_files = original
    assert windows == [125, 500]
    assert streamed.documents == sample_documents(read_corpus(folder).documents, 100, 0)
    assert sum(d["text"] == "The same  text, repeated" for d in streamed.documents) <= 1
    with pytest.raises(ValueError, match="max_documents"):
        read_corpus(folder, max_documents=0)


def test_memory_follows_the_sample_not_the_corpus(tmp_path):
    import tracemalloc

    text = "a paragraph of a large corpus with enough words to weigh something in memory " * 4
    path = write_lines(tmp_path / "big.jsonl", [{"id": f"doc-{i}", "text": f"{i} {text}"} for i in range(20_000)])

    def peak(**options) -> tuple[int, CorpusReadResult]:
        tracemalloc.start()
        try:
            result = read_corpus(path, **options)
            return tracemalloc.get_traced_memory()[1], result
        finally:
            tracemalloc.stop()

    whole_peak, whole = peak()
    sample_peak, sample = peak(max_documents=200, seed=0)
    assert len(whole.documents) == 20_000 and len(sample.documents) == 200 and sample.not_sampled == 19_800
    assert sample.documents == sample_documents(whole.documents, 200, 0)
    assert sample_peak < whole_peak / 10, (sample_peak, whole_peak)
