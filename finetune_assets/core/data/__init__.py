"""Corpus reading, sampling and the (query, document) pairs built from it."""
