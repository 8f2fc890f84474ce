"""Prices, the cost estimate and the smart-defaults table."""
