"""MQTT side: the device uploader and the station receiver (arriving with the sync issue)."""
