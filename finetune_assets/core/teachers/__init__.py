"""Teachers that score (query, document) pairs for distillation: cross-encoder and hybrid fusion."""
