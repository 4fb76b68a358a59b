"""The recorder: segmenter (a picamera2-style output), pre-event buffer, checkpoints, storage policy."""
