"""Training and evaluation: feature caches, the recipe, retrieval metrics."""
