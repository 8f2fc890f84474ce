from dagster import ConfigurableResource
from pydantic import Field


class OpenSearchResource(ConfigurableResource):
    """The user's cluster. Empty url = no cluster: the model is exported but not registered."""

    url: str = Field(default="", description="https://host:9200; empty for no cluster")
    username: str = Field(default="", description="Basic auth user (set with EnvVar)")
    password: str = Field(default="", description="Basic auth password (set with EnvVar; never logged)")
    verify_certs: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.url)
