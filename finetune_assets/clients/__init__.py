"""Clients for external services (OpenSearch, AWS); no Dagster imports here, so they run and test on their own."""
