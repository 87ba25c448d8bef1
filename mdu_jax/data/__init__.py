"""Data: benchmark sources (Hub or local), tokenizer loading with the families' conventions,
chat-template encoding, bucketed batches. Import the submodules: ``mdu_jax.data.sources``,
``.tokenizer``, ``.encoding``, ``.batching``."""

from mdu_jax.data.encoding import DataError

__all__ = ["DataError"]
