"""The release, in one place: the package, the User-Agent and the metrics read it."""

__version__ = "0.1.0"
