"""Whether torch.compile is tracing the current call, without importing torch (if torch is not imported, nothing
is compiling it). Code that mutates module state or relies on caches that Dynamo cannot follow (``lru_cache``, a
registry filled on first use) asks this first."""

from __future__ import annotations

import sys

__all__ = ["tracing"]


def tracing() -> bool:
    """True inside ``torch.compile``'s trace.

    >>> tracing()
    False
    """
    torch = sys.modules.get("torch")
    return torch is not None and bool(torch.compiler.is_compiling())
