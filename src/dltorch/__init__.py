"""dltorch: the worked examples of a PyTorch course as reproducible, tracked, exported and served models."""

__version__ = "0.1.0"
