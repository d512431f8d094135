"""winnow's stages (DataFrame -> (accepted, rejected)) and the pipeline driver."""

__version__ = "0.1.0"
