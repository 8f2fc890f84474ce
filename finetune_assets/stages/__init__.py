"""The pipeline's stages, one folder per asset group and one module per asset, named after it."""
