"""Encoding, ranking, negative mining and IR metrics for dense and sparse models."""
