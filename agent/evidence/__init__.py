"""The trust core: record format, keys, the append-only ledger and the verifier.

Depends on nothing else in the project except ``agent.errors``. The station, the uploader and
``bodycam-verify`` all use the verifier in :mod:`agent.evidence.verify`.
"""

# The software every boot record names (``bodycam 0.1.0``); here, not in ``agent``, because the ledger writes it
# and the core imports nothing outside itself. ``agent.__version__`` is this one.
__version__ = "0.1.0"
