"""synthfer: synthetic facial-expression training data from a YAML recipe."""

__version__ = "0.1.0"
