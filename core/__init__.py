"""Leaf utilities that configs, models and the pipeline all use (errors, the
registry helper). Nothing here imports jax, orbax or tfds."""
