"""The station CA's record of what it issued and revoked, in the broker folder beside the CA.

    issued/<device>/<serial hex>.crt   every client certificate signed for the device (0644, never rewritten)
    clients/<device>.crt               certificates made by the older ``broker-setup --device`` (key and all)
    crl.pem                            the revocation list Mosquitto checks every client certificate against

The CRL is the one record of revocation: revoking adds serials to it and re-signs it; nothing is ever taken
off it.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from agent.errors import ConfigError, KeyFileError
from agent.evidence.fsutil import display_path, write_file_durably
from sync.broker import CRL_FILE, read_ca, write_if_changed
from sync.broker_certs import crl_pem, crl_serials

ISSUED = "issued"


@dataclass(frozen=True)
class StationCA:
    """The CA files of a broker folder, loaded: what enrol and revoke sign with."""

    folder: Path
    cert_pem: bytes
    key_pem: bytes

    @classmethod
    def load(cls, folder: Path) -> StationCA:
        return cls(folder, *read_ca(folder))

    @property
    def crl_path(self) -> Path:
        return self.folder / CRL_FILE

    def revoked(self) -> dict[int, datetime.datetime]:
        if not self.crl_path.exists():
            raise KeyFileError(f"revocation list {display_path(self.crl_path)}: missing; run bodycam-station init")
        return crl_serials(self.crl_path, self.cert_pem)

    def revoke(self, serials: set[int]) -> set[int]:
        """Add ``serials`` to the CRL (re-signed, written durably); returns the ones not revoked before."""
        before = self.revoked()
        new = serials - set(before)
        if new:
            now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
            revoked = {**before, **dict.fromkeys(new, now)}
            write_if_changed(self.crl_path, crl_pem(self.cert_pem, self.key_pem, revoked), mode=0o644)
        return new


def broker_folder(ca_path: Path | None, source: str) -> Path:
    """The broker folder a station config points at through ``broker.ca`` (where init put the CA)."""
    if ca_path is None:
        raise ConfigError(f"{source}: key 'broker.ca': not set; enrol and revoke find the station CA beside it")
    return ca_path.parent


def issued_certificates(folder: Path, device: str) -> list[x509.Certificate]:
    """Every client certificate the CA issued for ``device``, oldest file name first."""
    paths = sorted((folder / ISSUED / device).glob("*.crt"))
    legacy = folder / "clients" / f"{device}.crt"
    if legacy.exists():
        paths.insert(0, legacy)
    certs = []
    for path in paths:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            raise KeyFileError(f"issued certificate {display_path(path)}: not readable PEM") from None
        names = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
        if names != [device]:
            raise KeyFileError(f"issued certificate {display_path(path)}: common name {names!r} is not {device!r}")
        certs.append(cert)
    return certs


def record_issued(folder: Path, device: str, cert_pem: bytes) -> Path:
    """Keep a copy of a certificate just issued, named by its serial, so it can be found to revoke it."""
    serial = x509.load_pem_x509_certificate(cert_pem).serial_number
    target = folder / ISSUED / device / f"{serial:040x}.crt"
    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    write_file_durably(target, cert_pem, mode=0o644, exclusive=True)
    return target

