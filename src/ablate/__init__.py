"""ablate: which architectural trick keeps a joint-embedding model from collapsing?"""

__version__ = "0.1.0"
