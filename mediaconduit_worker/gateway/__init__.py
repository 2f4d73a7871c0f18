"""The HTTP gateway: where untrusted API tenants enter (``mediaconduit gateway``). A runtime package: the
provider SDK at the root never imports it, and nothing in it connects at import."""

from .app import create_app

__all__ = ["create_app"]
