import pytest

from finetune_assets.resources.base_model import BaseModelResource


def test_each_type_has_its_default_and_bge_small_is_a_dense_base_only():
    assert BaseModelResource().model_name == "local:all-MiniLM-L6-v2"
    assert BaseModelResource(model_type="sparse").model_name == "local:splade-tiny"
    assert BaseModelResource(base_model="local:bge-small-en").model_name == "local:bge-small-en"
    for model_type in ("sparse", "inference_free"):
        with pytest.raises(ValueError, match=f"local:bge-small-en is a dense bi-encoder but model_type is {model_type}"):
            _ = BaseModelResource(model_type=model_type, base_model="local:bge-small-en").model_name
