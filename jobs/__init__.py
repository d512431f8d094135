"""winnow's stages (DataFrame -> (accepted, rejected)), the pipeline driver and the commands."""

from schemas import __version__

__all__ = ["__version__"]
