"""The device uploader (``bodycam-sync``): sends the store's ledger lines and files to the station.

Modules: ``plan`` (pure decisions: which lines, batches, which files in which order, missing byte ranges),
``ledger_view`` (incremental read-only view of the ledger), ``connection`` (paho-mqtt 2.x client, MQTT 5 +
TLS, persistent session), ``session`` (one sync session), ``transfer`` (offers and the chunk window),
``acks`` (judging the station's acknowledgements), ``custody_port`` (receipts and purges through the
custody, the ack spool), ``runner`` (passes, ``--once`` and daemon loops), ``cli`` (the command line).

From Python: ``Uploader(config, custody, station_key).run_once(timeout)`` (see ``runner``).
"""
