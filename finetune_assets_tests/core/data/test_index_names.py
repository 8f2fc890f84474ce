import pytest

from finetune_assets.core.data.index_names import InvalidIndexName, index_name_problem, validate_index_name


@pytest.mark.parametrize("name", ["docs", "my-index_2", "logs.2026", "検索"])
def test_valid_names(name):
    assert validate_index_name(name) == name


@pytest.mark.parametrize("name, reason", [
    ("", "empty"), ("Docs", "upper-case"), ("_docs", "starts with '_'"), ("-x", "starts with '-'"),
    ("a b", "' '"), ("a/b", "'/'"), ("a:b", "':'"), ("..", "reserved"), ("x" * 256, "255 bytes"),
])
def test_invalid_names_say_why(name, reason):
    assert reason in index_name_problem(name)
    with pytest.raises(InvalidIndexName, match="not a valid OpenSearch index name"):
        validate_index_name(name)
