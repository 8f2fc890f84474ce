"""Fill the settings a run left unset (None) from the smart-defaults table, and say so in the log and metadata."""

from dagster import AssetExecutionContext, MetadataValue

from finetune_assets.core.cost import smart_defaults
from finetune_assets.core.jsonl import read_jsonl
from finetune_assets.resources.storage import ArtifactStorage


def sampled_documents(storage: ArtifactStorage, index: str) -> int:
    return sum(1 for _ in read_jsonl(storage.fetch(index, "raw_corpus") / "documents.jsonl"))


def fill(context: AssetExecutionContext, chosen: dict, model_type: str, num_documents: int) -> tuple[dict, dict]:
    """The settings with the table's values where `chosen` has None, and metadata naming what was filled."""
    values, filled = smart_defaults.resolve(chosen, model_type, num_documents)
    if not filled:
        return values, {}
    row = smart_defaults.lookup(model_type, num_documents)
    size = f"up to {row.max_documents:,}" if row.max_documents else "any number of"
    picked = ", ".join(f"{name}={values[name]}" for name in filled)
    context.log.info(f"smart defaults for {model_type}, {num_documents:,} documents ({size} documents; "
                     f"{row.basis}): {picked}; set them in the run config to override")
    return values, {"smart_defaults": MetadataValue.json({"filled": {n: values[n] for n in filled},
                                                          "model_type": model_type, "documents": num_documents,
                                                          "row_max_documents": row.max_documents,
                                                          "basis": row.basis})}


def fill_batch_kl(context: AssetExecutionContext, chosen: dict, model_type: str) -> tuple[dict, dict]:
    """`chosen` with each None filled from the smart-defaults table's batch_kl entry for the model type."""
    values, filled = smart_defaults.resolve_batch_kl(chosen, model_type)
    if not filled:
        return chosen, {}
    entry = smart_defaults.batch_kl_lookup(model_type)
    picked = {name: values[name] for name in filled}
    context.log.info(f"batch_kl defaults for {model_type} ({entry.basis}): "
                     f"{', '.join(f'{k}={v}' for k, v in picked.items())}; set them in the run config to override")
    return values, {"smart_defaults": MetadataValue.json({"filled": picked, "loss": "batch_kl",
                                                          "model_type": model_type, "basis": entry.basis})}
