from dagster import ConfigurableResource
from pydantic import Field


class QueryGeneratorResource(ConfigurableResource):
    """Which model writes the synthetic queries. Local SmolLM2 by default; any OpenAI-compatible server by config.

    The Bedrock batch path (production) writes the same record layout, so everything downstream is shared.
    """

    backend: str = Field(default="smollm2", description="smollm2 (offline default) or openai (OpenAI-compatible server)")
    batch_size: int = Field(default=8, description="Documents per generation batch (local backend)")
    base_url: str = Field(default="", description="OpenAI-compatible server, e.g. http://localhost:11434/v1 (Ollama)")
    model: str = Field(default="", description="Model name on the OpenAI-compatible server")
    api_key: str = Field(default="", description="API key for the server; set it with EnvVar, it is never logged")
    seed: int = 0

    def create(self):
        from finetune_assets.core.querygen import make_generator

        if self.backend == "smollm2":
            return make_generator("smollm2", batch_size=self.batch_size, seed=self.seed)
        if self.backend == "openai":
            if not self.base_url or not self.model:
                raise ValueError("query generator backend 'openai' needs base_url and model")
            return make_generator("openai", base_url=self.base_url, model=self.model, api_key=self.api_key or None)
        raise ValueError(f"unknown query generator backend {self.backend!r}; use 'smollm2' or 'openai'")
