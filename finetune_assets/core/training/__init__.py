"""Training recipes and losses, run by the training entry point."""
