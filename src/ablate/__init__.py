"""ablate: which architectural trick keeps a joint-embedding model from collapsing?"""

__version__ = "0.1.0"

from .resolvers import register as _register_resolvers

_register_resolvers()
