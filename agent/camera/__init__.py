"""Camera backends behind one small port (see :mod:`agent.camera.base`)."""
