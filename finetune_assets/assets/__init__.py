"""One module per stage, named after its asset."""
