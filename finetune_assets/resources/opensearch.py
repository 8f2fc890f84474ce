from dagster import ConfigurableResource
from pydantic import Field

from finetune_assets.core.redact import redact


class OpenSearchResource(ConfigurableResource):
    """The user's cluster. Empty url = no cluster: the model is exported but not registered."""

    url: str = Field(default="", description="https://host:9200; empty for no cluster")
    username: str = Field(default="", description="Basic auth user (set with EnvVar)")
    password: str = Field(default="", description="Basic auth password (set with EnvVar; never logged)")
    aws_region: str = Field(default="", description="Sign requests with AWS SigV4 for Amazon OpenSearch Service")
    aws_service: str = Field(default="es", description="es (managed domains) or aoss (Serverless)")
    verify_certs: bool = True

    @property
    def configured(self) -> bool:
        return bool(self.url)

    @property
    def display_url(self) -> str:
        """The url as logs, metadata and error messages show it: a user:password in it becomes ***."""
        return redact(self.url, secrets=[self.password])

    def client(self):
        from finetune_assets.clients.opensearch_dump.connection import opensearch_client

        if not self.configured:
            raise ValueError("no OpenSearch cluster configured: set the opensearch resource's url (OPENSEARCH_URL)")
        return opensearch_client(self.url, username=self.username or None, password=self.password or None,
                           aws_region=self.aws_region or None, aws_service=self.aws_service,
                           verify_certs=self.verify_certs)
