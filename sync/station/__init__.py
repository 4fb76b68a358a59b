"""The station receiver (issue 5): verifies what devices upload over MQTT and stores it write-once.

    config        firmware_config/station_config.py ([station], [broker], [limits], [deadline])
    receiver      Receiver.handle(topic, payload) -> messages to publish; no MQTT inside
    intake        ledger lines: chain checks, held records, ordered durable append
    transfer      file offers and chunks: staging, completion, write-once objects
    ports         storage ports: Staging, ObjectStore (write-once), LedgerCopies (append-only), EvidenceStore
    store         FilesystemEvidenceStore: the ports in a folder (objects/, devices/<D>/, staging/, ledger-pieces/)
    index         Index ports by concern (index_ports); SqliteIndex, a mixin per concern, migrations at open
    deadline      the upload deadline in working days (art. 17)
    problems      reporting a problem: a log line and an index row
    model         rows and problem kinds shared by the parts
    service       the MQTT side (paho-mqtt 2.x, MQTT 5, TLS, persistent session, manual acks)
    report, cli   bodycam-station: serve, add-device, show-key, status, problems, timeline
"""
