"""On-device side of the body-camera evidence system."""

__version__ = "0.1.0"
