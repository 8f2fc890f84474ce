"""Dagster resources: configuration and clients the assets share."""
