"""Non-English corpora: script detection, the prompt's language hint, script-aware query filters, CJK answers."""
from finetune_assets.core.data.pairs import QueryFilter, build_pairs
from finetune_assets.core.languages import dominant_script, language_hint, repetition_tokens, word_count
from finetune_assets.core.querygen.bedrock_records import parse_queries_text
from finetune_assets.core.querygen.prompts import LANGUAGE_RULE, build_query_prompt
from finetune_assets.core.querygen.smollm import passage_block

KOREAN = "검색 엔진은 역색인에 단어마다 그 단어가 나오는 문서 목록을 저장합니다. 질의가 오면 목록을 합쳐 순위를 매깁니다."
KOREAN_WITH_ENGLISH = "OpenSearch의 k-NN plugin은 HNSW graph로 이웃을 찾고, 벡터 검색은 문서와 질의를 embedding으로 바꿉니다."
JAPANESE = "検索エンジンは転置インデックスを使って、単語ごとにその単語を含む文書の一覧を保存します。"
CHINESE = "搜索引擎使用倒排索引，为每个词保存包含该词的文档列表，然后按相关性对文档排序。"
ENGLISH = "A search engine keeps an inverted index: for each word, the list of documents that contain it."
RUSSIAN = "Поисковая система хранит для каждого слова список документов, в которых оно встречается."


def test_dominant_script_from_unicode_ranges():
    assert dominant_script(KOREAN) == "hangul"
    assert dominant_script(JAPANESE) == "kana"  # kanji with kana is Japanese, not Chinese
    assert dominant_script(CHINESE) == "han"
    assert dominant_script(ENGLISH) == "latin"
    assert dominant_script(RUSSIAN) == "cyrillic"
    assert dominant_script("123 -- !!") == "unknown" and dominant_script("") == "unknown"
    # more Latin letters than Hangul syllables, yet the sentence is Korean: a syllable weighs more than a letter
    assert dominant_script(KOREAN_WITH_ENGLISH) == "hangul"
    assert dominant_script("Notes on 검색 ranking in large English collections of web pages") == "latin"


def test_language_hint_names_the_language_only_when_the_script_tells_it():
    assert language_hint(KOREAN) == "This document is in Korean: write the queries in Korean."
    assert "in Japanese" in language_hint(JAPANESE) and "in Chinese" in language_hint(CHINESE)
    assert language_hint(ENGLISH) == "" and language_hint("") == ""
    assert "Cyrillic script" in language_hint(RUSSIAN) and "Russian" not in language_hint(RUSSIAN)
    mixed = language_hint(KOREAN_WITH_ENGLISH)
    assert mixed.startswith("This document is in Korean") and "Latin letters as they are" in mixed


def test_prompts_carry_the_hint_and_latin_prompts_stay_unchanged():
    korean = build_query_prompt({"id": "k", "title": "역색인의 원리", "text": KOREAN})
    assert LANGUAGE_RULE in korean and "write the queries in Korean." in korean
    english = build_query_prompt({"id": "e", "text": ENGLISH})
    assert LANGUAGE_RULE + "\n" in english and "This document is in" not in english
    japanese = build_query_prompt({"id": "j", "text": JAPANESE})
    assert "write the queries in Japanese." in japanese
    # the local few-shot prompt gets the hint as its own line after a non-Latin passage only
    block = passage_block({"id": "k", "text": KOREAN}, 1000)
    assert block.endswith("\nThis document is in Korean: write the queries in Korean.\n")
    assert passage_block({"id": "e", "text": ENGLISH}, 1000) == f"Passage: {ENGLISH}\n"


def test_word_count_counts_characters_in_scripts_without_spaces():
    assert word_count("how does search work") == 4
    assert word_count("倒排索引是什么") == 4          # 7 characters
    assert word_count("검색 엔진의 구조") == 1 + 2 + 1
    assert word_count("OpenSearch에서 검색") == 3    # the particle attached to an English word counts apart
    assert word_count("転置インデックスとは") == 5
    assert repetition_tokens("索引索引索引") == ["索引", "引索", "索引", "引索", "索引"]


KO_DOC = {"id": "ko", "title": "역색인의 원리", "text": KOREAN}
ZH_DOC = {"id": "zh", "title": "倒排索引", "text": CHINESE}


def test_filters_keep_real_korean_and_chinese_queries():
    rules = QueryFilter()
    kept = [("ko", "역색인이란"), ("ko", "벡터 검색 원리"), ("ko", "검색 엔진이 문서 순위를 매기는 방법"),
            ("zh", "如何建立倒排索引"), ("zh", "搜索引擎怎样给文档排序"), ("zh", "什么是倒排索引")]
    docs = {"ko": KO_DOC, "zh": ZH_DOC}
    for doc_id, query in kept:
        assert rules.problem(query, docs[doc_id]) is None, query
    # one space-less "word" used to be too short for min_words=2, and a long Chinese query never too long
    assert QueryFilter().problem("一个搜索引擎为什么要先把每个词对应的文档列表保存下来然后再根据相关性对所有候选文档进行"
                                 "排序才能返回最有用的结果给正在查找资料的用户呢", ZH_DOC) == "too long"


def test_filters_drop_broken_korean_and_chinese_queries():
    rules = QueryFilter()
    assert rules.problem("밥", KO_DOC) == "too short"
    assert rules.problem("索引", ZH_DOC) == "too short"
    assert rules.problem("검색 검색 검색 검색", KO_DOC) == "repeated word"
    assert rules.problem("索引索引索引索引", ZH_DOC) == "repeated word"
    assert rules.problem("为每个词保存包含该词的文档列表", ZH_DOC) == "copy of the document"
    assert rules.problem("역색인의 원리", KO_DOC) == "copy of the title"


def test_pairs_record_the_document_script():
    result = build_pairs([("ko", "벡터 검색 원리", "conceptual"), ("zh", "如何建立倒排索引", "factoid"),
                          ("en", "what does an inverted index store", "factoid")],
                         {"ko": KO_DOC, "zh": ZH_DOC, "en": {"id": "en", "text": ENGLISH}}, held_out_fraction=0.0)
    assert {p["doc_id"]: p["script"] for p in result.train} == {"ko": "hangul", "zh": "han", "en": "latin"}


def test_parser_reads_cjk_answers():
    answer = "「転置インデックスとは何ですか？」\n「検索エンジンはどうやって文書を探すのか？」"
    assert [str(q) for q in parse_queries_text(answer)] == ["転置インデックスとは何ですか？",
                                                           "検索エンジンはどうやって文書を探すのか？"]
    bullets = "検索クエリ：\n・転置インデックスの仕組み\n・文書の順位付けの方法"
    assert [str(q) for q in parse_queries_text(bullets)] == ["転置インデックスの仕組み", "文書の順位付けの方法"]
    korean_json = '{"queries": [{"type": "factoid", "text": "역색인이란"}, {"type": "conceptual", "text": "검색 순위"}]}'
    assert [(q.type, str(q)) for q in parse_queries_text(korean_json)] == [("factoid", "역색인이란"),
                                                                          ("conceptual", "검색 순위")]


def test_the_english_local_generator_warns_about_other_scripts(caplog):
    from finetune_assets.core.querygen.smollm import warn_on_other_scripts

    documents = [{"id": "k", "text": KOREAN}, {"id": "j", "text": JAPANESE}, {"id": "e", "text": ENGLISH}]
    with caplog.at_level("WARNING"):
        assert warn_on_other_scripts(documents) == {"hangul": 1, "kana": 1}
    assert "2 of 3 documents are not in Latin script (hangul: 1, kana: 1)" in caplog.text
    caplog.clear()
    assert warn_on_other_scripts([{"id": "e", "text": ENGLISH}]) == {} and not caplog.text
