"""Retrieval logic. Nothing here imports Dagster or boto3, so it runs and tests on its own."""
