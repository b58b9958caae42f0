"""Library kernels called from jitted code through `jax.ffi` (CPU only)."""
