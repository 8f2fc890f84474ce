"""Synonym augmentation: dictionary files, term matching across scripts, variants of training pairs."""
import json

import pytest

from finetune_assets.core.data.augment import augment_pairs, load_synonyms, query_variants


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def dictionary(tmp_path):
    return load_synonyms(write(tmp_path, "terms.tsv", "# Korean\tEnglish\n검색\tsearch\n\n인덱스\tindex\n"
                                                      "역색인\tinverted index\n데이터베이스\tdatabase\tDB\n"))


def test_tsv_dictionary_works_both_ways(dictionary, tmp_path):
    assert dictionary.entries == 5   # 데이터베이스 has two synonyms
    assert dictionary.synonyms["검색"] == ["search"] and dictionary.synonyms["search"] == ["검색"]
    assert dictionary.synonyms["데이터베이스"] == ["database", "DB"] and dictionary.synonyms["db"] == ["데이터베이스"]
    one_way = load_synonyms(write(tmp_path, "one.tsv", "검색\tsearch\n"), bidirectional=False)
    assert one_way.synonyms == {"검색": ["search"]} and one_way.terms == 1


def test_json_dictionary(tmp_path):
    path = write(tmp_path, "terms.json", json.dumps({"검색": ["search", "retrieval"], "요리": "cooking"},
                                                    ensure_ascii=False))
    loaded = load_synonyms(path)
    assert loaded.entries == 3 and loaded.synonyms["cooking"] == ["요리"]
    assert loaded.synonyms["검색"] == ["search", "retrieval"]


@pytest.mark.parametrize("name, text, where", [
    ("bad.tsv", "검색\tsearch\n# fine\n인덱스 index\n", "bad.tsv:3:"),           # no tab
    ("empty.tsv", "검색\tsearch\n벡터\t\n", "empty.tsv:2:"),                    # empty synonym
    ("self.tsv", "Search\tsearch\n", "self.tsv:1:"),                           # its own synonym
    ("bad.json", '{\n  "검색": ["search"],\n  "벡터": 3\n}\n', "bad.json:3:"),   # not a list of strings
    ("broken.json", '{\n  "검색": ["search"]\n  "벡터": ["vector"]\n}\n', "broken.json:3:"),  # missing comma
])
def test_malformed_entries_name_the_file_and_line(tmp_path, name, text, where):
    with pytest.raises(ValueError, match=where):
        load_synonyms(write(tmp_path, name, text))


def test_missing_or_empty_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.tsv"):
        load_synonyms(tmp_path / "nowhere.tsv")
    with pytest.raises(ValueError, match="no synonym entries"):
        load_synonyms(write(tmp_path, "comments.tsv", "# nothing yet\n"))


def test_latin_terms_match_whole_words_and_hangul_terms_anywhere(dictionary):
    def variants(query):
        return [v for v, _, _ in query_variants(query, dictionary)]

    assert variants("검색하는 방법") == ["search하는 방법"]            # Korean particles attach to the term
    assert variants("index를 만드는 법") == ["인덱스를 만드는 법"]      # a Hangul particle ends the English word
    assert variants("indexing speed") == [] and variants("research papers") == []
    assert variants("Search tips") == ["검색 tips"]                     # case-insensitive
    # the longest term wins: "inverted index" is swapped whole, not its "index"
    assert variants("how an inverted index works") == ["how an 역색인 works"]
    assert variants("DB 검색") == ["데이터베이스 검색", "DB search"]


def test_variants_are_seeded_capped_and_keep_the_pair(dictionary):
    train = [{"query": "데이터베이스 검색 인덱스 구조", "positive": "doc one", "doc_id": "d1", "query_type": "factoid"},
             {"query": "what is a search engine", "positive": "doc two", "doc_id": "d2", "query_type": "conceptual"},
             {"query": "김치찌개 끓이는 법", "positive": "doc three", "doc_id": "d3", "query_type": "factoid"}]
    result = augment_pairs(train, dictionary, max_variants=2, seed=3)
    variants = [p for p in result.pairs if p["augmented"]]
    assert result.added == len(variants) == 3 and result.pairs_with_terms == 2
    assert [p["query"] for p in result.pairs if not p["augmented"]] == [p["query"] for p in train]
    first = [p for p in variants if p["doc_id"] == "d1"]
    assert len(first) == 2 and all(p["query_type"] == "factoid" and p["positive"] == "doc one" for p in first)
    assert all(p["source_query"] == "데이터베이스 검색 인덱스 구조" for p in first)
    assert {p["query"] for p in variants if p["doc_id"] == "d2"} == {"what is a 검색 engine"}
    # the same choice whatever the order of the pairs; another seed may choose other swaps of d1's four
    again = augment_pairs(list(reversed(train)), dictionary, max_variants=2, seed=3)
    assert sorted(p["query"] for p in again.pairs) == sorted(p["query"] for p in result.pairs)
    choices = {frozenset(p["query"] for p in augment_pairs(train, dictionary, max_variants=2, seed=s).pairs
                         if p["augmented"] and p["doc_id"] == "d1") for s in range(8)}
    assert len(choices) > 1
    assert augment_pairs(train, dictionary, max_variants=0).added == 0


def test_variants_never_repeat_an_existing_or_reserved_query(dictionary):
    train = [{"query": "search tips", "positive": "a", "doc_id": "d1", "query_type": "factoid"},
             {"query": "검색 tips", "positive": "b", "doc_id": "d2", "query_type": "factoid"},
             {"query": "데이터베이스 tuning", "positive": "c", "doc_id": "d3", "query_type": "factoid"}]
    result = augment_pairs(train, dictionary, max_variants=3, reserved_queries={"database tuning"})
    assert result.added == 1  # only DB tuning: the rest would repeat a generated or a held-out query
    assert [p["query"] for p in result.pairs if p["augmented"]] == ["DB tuning"]
    with pytest.raises(ValueError, match="max_variants"):
        augment_pairs(train, dictionary, max_variants=-1)


def test_mixed_script_terms_keep_the_word_boundary_on_their_latin_side(tmp_path):
    mixed = load_synonyms(write(tmp_path, "mixed.tsv", "SQL 쿼리\tSQL query\t\n"))  # a trailing tab is ignored
    assert [v for v, _, _ in query_variants("느린 SQL 쿼리를 찾는 법", mixed)] == ["느린 SQL query를 찾는 법"]
    assert query_variants("MySQL 쿼리 튜닝", mixed) == []
    assert [v for v, _, _ in query_variants("slow SQL  query plans", mixed)] == ["slow SQL 쿼리 plans"]
