"""The AWS price table (prices.toml beside this file): loading and look-ups with errors that name the table.

Pure logic: nothing here imports Dagster or boto3.
"""
from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

PRICES_FILE = Path(__file__).with_name("prices.toml")

# Cross-region inference profiles cost what the base model costs in the source region.
_GEO_PREFIX = re.compile(r"^(?:us|eu|apac|global|us-gov|ca|jp|au)\.")


class PriceTableError(ValueError):
    """A price the estimate needs is not in the table (the message names the entry and the file)."""


@dataclass(frozen=True)
class BedrockPrice:
    model_id: str      # the table's key
    name: str
    input_per_1k: float
    output_per_1k: float
    batch_input_per_1k: float | None
    batch_output_per_1k: float | None


def base_model_id(model_id: str) -> str:
    """'us.anthropic.claude-...' or a foundation-model ARN -> 'anthropic.claude-...'."""
    return _GEO_PREFIX.sub("", model_id.strip().rsplit("/", 1)[-1])


@dataclass(frozen=True)
class PriceTable:
    data: dict
    path: Path

    @property
    def as_of(self) -> str:
        return str(self.data["as_of"])

    @property
    def region(self) -> str:
        return str(self.data["region"])

    def _section(self, name: str) -> dict:
        if name not in self.data:
            raise PriceTableError(f"price table {self.path} has no [{name}] section")
        return self.data[name]

    def _entry(self, section: str, group: str, key: str, what: str) -> dict:
        entries = self._section(section).get(group, {})
        if key not in entries:
            raise PriceTableError(f"no price for {what} {key!r} in {self.path} (section [{section}.{group}]); "
                                  f"known: {', '.join(sorted(entries))}. Add it to that table.")
        return entries[key]

    def source(self, section: str) -> str:
        part = self._section(section)
        return f"{section}: {part.get('source_url', '?')} (figures as of {part.get('as_of', '?')})"

    def bedrock(self, model_id: str) -> BedrockPrice:
        key = base_model_id(model_id)
        entry = self._entry("bedrock", "models", key, f"Bedrock model {model_id!r}, looked up as")
        return BedrockPrice(model_id=key, name=entry.get("name", key), input_per_1k=float(entry["input_per_1k"]),
                            output_per_1k=float(entry["output_per_1k"]),
                            batch_input_per_1k=entry.get("batch_input_per_1k"),
                            batch_output_per_1k=entry.get("batch_output_per_1k"))

    def training_instance(self, instance_type: str) -> dict:
        return self._entry("sagemaker_training", "instances", instance_type, "SageMaker training instance")

    def training_devices(self, instance_type: str, instance_count: int = 1) -> tuple[str, int]:
        """The device type a SageMaker training job of `instance_count` x `instance_type` trains on (its GPU type,
        or cpu) and how many of them: the GPUs of every instance, or one per CPU instance."""
        instance = self.training_instance(instance_type)
        return instance["gpu"], max(1, instance["gpus"]) * instance_count

    def realtime_instance(self, instance_type: str) -> dict:
        return self._entry("sagemaker_realtime", "instances", instance_type, "SageMaker real-time instance")

    def serverless_per_second(self, memory_mb: int) -> float:
        return float(self._entry("sagemaker_serverless", "per_second_by_memory_mb", str(memory_mb),
                                 "SageMaker serverless memory size (MB)"))

    def default_rows_per_second(self, gpu: str) -> float:
        return float(self._entry("training_throughput", "rows_per_second", gpu, "training throughput of GPU type"))


def load_prices(path: str | Path | None = None) -> PriceTable:
    """The price table; a broken file gets an error naming it and the TOML problem."""
    path = Path(path) if path else PRICES_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"price table {path} is not valid TOML: {exc}") from exc
    for key in ("as_of", "region"):
        if not data.get(key):
            raise PriceTableError(f"price table {path} has no top-level {key!r}")
    return PriceTable(data=data, path=path)
