import pytest

from finetune_assets.resources.base_model import BaseModelResource


def test_each_type_has_its_default_and_a_packaged_model_serves_only_its_kind():
    assert BaseModelResource().model_name == "local:bge-small-en"
    assert BaseModelResource(model_type="sparse").model_name == "local:splade-tiny"
    assert BaseModelResource(base_model="local:all-MiniLM-L6-v2").model_name == "local:all-MiniLM-L6-v2"
    for model_type in ("sparse", "inference_free"):
        with pytest.raises(ValueError, match=f"local:bge-small-en is a dense bi-encoder but model_type is {model_type}"):
            _ = BaseModelResource(model_type=model_type, base_model="local:bge-small-en").model_name
    with pytest.raises(ValueError, match="LOCAL:splade-tiny is a SPLADE model but model_type is dense: set model_type "
                                         "sparse, or base_model local:bge-small-en"):
        _ = BaseModelResource(base_model="LOCAL:splade-tiny").model_name
    assert BaseModelResource(model_type="inference_free", base_model="local:splade-tiny").model_name == \
        "local:splade-tiny"
    assert BaseModelResource(model_type="sparse", base_model="/models/my-splade").model_name == "/models/my-splade"
