"""Message sizes the device-station contract fixes, and which the device's configuration checks against.

Here, in the core, because the sync side (sync/protocol.py, sync/broker.py, which name them too) and the
configuration (firmware_config/device_config.py: a chunk or a records batch must fit the broker's limit)
both need them, and configuration imports nothing but the core.
"""

from __future__ import annotations

# A chunk header is a few hundred bytes; the limit stops a chunk from hiding a large JSON document.
MAX_CHUNK_HEADER_BYTES = 1024
# Room the MQTT 5 PUBLISH fixed header, topic and properties take besides the payload.
PUBLISH_OVERHEAD_BYTES = 512
# The broker's message limit unless the station's config says otherwise.
DEFAULT_MAX_PACKET_BYTES = 4 * 1024 * 1024
