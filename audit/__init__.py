"""kvaudit: does this KV-cache press really do what its paper says?

The static path (``kvaudit.analysis``, ``kvaudit.reporters``, ``kvaudit check``) never imports
torch, transformers or kvpress; the tracer and the reference press import them lazily.
"""

__version__ = "0.1.0"
