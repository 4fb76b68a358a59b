"""Device health (SPEC art. 26): the self-test at start and the runtime watch.

``config`` reads ``[health]``; ``selftest`` holds the start checks; ``monitor`` watches while running;
``reporter`` writes the signed health report that the uploader publishes; ``report`` is the report's format.
"""
