"""facebridge: embed faces with ONNX recognizers and carry templates between their embedding spaces.

from facebridge import Bridge      # the library, in-process (facebridge.bridge)
from facebridge import Client      # the typed HTTP client of a running service (facebridge.client)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["AsyncClient", "Bridge", "Client", "__version__"]

if TYPE_CHECKING:
    from facebridge.bridge import Bridge
    from facebridge.client import AsyncClient, Client


def __getattr__(name: str) -> Any:
    """Import Bridge / Client on first use, so `import facebridge` (and the CLI) stays light."""
    if name == "Bridge":
        from facebridge.bridge import Bridge

        return Bridge
    if name in ("Client", "AsyncClient"):
        from facebridge import client

        return getattr(client, name)
    raise AttributeError(f"module 'facebridge' has no attribute {name!r}")
