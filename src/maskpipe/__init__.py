"""maskpipe: a reproducible, cached pipeline for the face-mask-status image competition."""

__version__ = "0.1.0"
