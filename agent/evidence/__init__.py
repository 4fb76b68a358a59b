"""The trust core: record format, keys, the append-only ledger and the verifier.

Depends on nothing else in the project except ``agent.errors``. The station, the uploader and
``bodycam-verify`` all use the verifier in :mod:`agent.evidence.verify`.
"""
