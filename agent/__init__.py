"""On-device side of the body-camera evidence system."""

from agent.evidence import __version__

__all__ = ["__version__"]
