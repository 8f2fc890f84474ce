"""Clients for external services (OpenSearch); no Dagster imports here, so they run and test on their own."""
