"""Choosing a camera backend by name, overridable from the environment.

``BODYCAM_CAMERA=synthetic bodycam-agent ...`` runs the agent without a camera, as gpiozero's
``GPIOZERO_PIN_FACTORY`` swaps its pin backend. The backends are imported only when chosen, so the
Pi backend's lazy picamera2 import and OpenCV's device probing never happen unless asked for.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from agent.camera.base import Camera, CameraSettings
from agent.errors import CameraError
from firmware_config.settings import CAMERA_BACKENDS

log = logging.getLogger(__name__)

ENV_VAR = "BODYCAM_CAMERA"
BACKENDS = CAMERA_BACKENDS  # the names _backend_class knows; the config and CLI offer these


def _backend_class(name: str) -> Callable[..., Camera]:
    if name == "synthetic":
        from agent.camera.synthetic import SyntheticCamera

        return SyntheticCamera
    if name == "opencv":
        from agent.camera.opencv_camera import OpenCVCamera

        return OpenCVCamera
    from agent.camera.picamera2_camera import Picamera2Camera

    return Picamera2Camera


def chosen_backend(backend: str, environ: Mapping[str, str] | None = None) -> str:
    """The backend to use: ``$BODYCAM_CAMERA`` if set (and not empty), else ``backend``."""
    env = os.environ if environ is None else environ
    override = env.get(ENV_VAR, "").strip()
    name = (override or backend).strip().lower()
    if name not in BACKENDS:
        origin = f"${ENV_VAR}" if override else "the configuration"
        raise CameraError(f"unknown camera backend {name!r} (from {origin}): valid names are {', '.join(BACKENDS)}")
    return name


def open_camera(backend: str, settings: CameraSettings, **options: Any) -> Camera:
    """Open the named backend (or ``$BODYCAM_CAMERA``'s) with ``settings`` and the options it accepts.

    Options are checked against the backend's parameters. When the environment has swapped the backend,
    options meant for the configured one (a ``source`` for OpenCV, ``realtime`` for the synthetic
    camera) are dropped with a log line rather than failing; a misspelt option still fails without it.
    """
    name = chosen_backend(backend)
    factory = _backend_class(name)
    accepted = set(inspect.signature(factory).parameters) - {"settings"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        if name == backend.strip().lower():
            raise CameraError(
                f"camera backend {name!r} takes no option {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}"
            )
        log.info("%s=%s: ignoring options for %r: %s", ENV_VAR, name, backend, ", ".join(unknown))
        options = {key: value for key, value in options.items() if key in accepted}
    return factory(settings, **options)
