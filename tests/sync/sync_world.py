"""A station and devices around a real Mosquitto: the receiver and the uploader as real processes.

``SyncWorld(tmp_path, broker)`` writes the station's config, enrolls devices, starts and kills
``bodycam-station serve`` and ``bodycam-sync``, and reads the station's index for the assertions.
Import in tests/sync: ``from sync_world import SyncWorld``.
"""

from __future__ import annotations

import hashlib
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from broker_fixture import MosquittoBroker
from helpers import wait_for

from agent.evidence.keys import DeviceKey, load_or_create_device_key, public_key_pem
from agent.evidence.ledger import Ledger
from agent.evidence.store import LEDGER_FILE, segment_file_name
from firmware_config.toml_write import dumps

BIN = Path(sys.executable).parent
STATION_ID = "station-t"
FAULTY_SERVE = Path(__file__).resolve().parents[1] / "station" / "faulty_serve.py"


def big_segment_store(store: Path, key: DeviceKey, device_id: str, sizes: list[int], seed: int = 5) -> list[Path]:
    """A store whose segments are random bytes of the given sizes under real signed records."""
    import random

    rng = random.Random(seed)
    paths = []
    with Ledger.open(store, key, device_id, boot_reason="test") as ledger:
        index = ledger.layout.next_segment_index()
        for size in sizes:
            stored = ledger.layout.write_segment(segment_file_name(index, "ts"), rng.randbytes(size))
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
            paths.append(store / stored.name)
            index += 1
    return paths


class SyncWorld:
    def __init__(self, root: Path, broker: MosquittoBroker) -> None:
        self.root = root
        self.broker = broker
        self.data = root / "station-data"
        self.station_key_path = root / "station-ack.key"
        self.station_key = load_or_create_device_key(self.station_key_path)
        self.station_pub = root / "station.pub"
        self.station_pub.write_text(public_key_pem(self.station_key.public_key))
        ca, cert, key = broker.client_tls("station")
        self.config = root / "station.toml"
        self.config.write_text(dumps({
            "station": {"id": STATION_ID, "data": str(self.data), "key": str(self.station_key_path)},
            "broker": {"host": "127.0.0.1", "port": broker.port, "ca": str(ca), "cert": str(cert), "key": str(key)},
        }))
        self.station: subprocess.Popen[bytes] | None = None
        self.station_log = root / "station.log"
        self.uploaders: list[subprocess.Popen[bytes]] = []

    # ------------------------------------------------------------------ station

    def station_cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "bodycam-station"), *args, "--config", str(self.config)],
                              capture_output=True, text=True, check=check, timeout=60)

    def enroll(self, device_id: str, key: DeviceKey) -> None:
        pub = self.root / f"{device_id}.pub"
        pub.write_text(public_key_pem(key.public_key))
        self.station_cli("add-device", "--device", device_id, "--pubkey", str(pub))

    def start_station(self, fault: str | None = None) -> subprocess.Popen[bytes]:
        """``bodycam-station serve``; with ``fault``, the same station with that fault hook installed
        (tests/station/faulty_serve.py)."""
        command = [str(BIN / "bodycam-station"), "serve"]
        if fault is not None:
            command = [sys.executable, str(FAULTY_SERVE), fault]
        with open(self.station_log, "ab") as log:
            self.station = subprocess.Popen([*command, "--config", str(self.config)], stdout=log, stderr=log)
        # Subscribed once the broker has its session: wait for the receiver's own log line or a short while.
        wait_for(lambda: "subscribed" in self.log_text() or self.station is None or self.station.poll() is not None,
                 10, "the station to subscribe")
        assert self.station.poll() is None, self.log_text()[-3000:]
        return self.station

    def log_text(self) -> str:
        return self.station_log.read_text(errors="replace") if self.station_log.exists() else ""

    def kill_station(self) -> None:
        if self.station is not None and self.station.poll() is None:
            self.station.send_signal(signal.SIGKILL)
            self.station.wait(10)

    def stop_station(self) -> int | None:
        if self.station is None:
            return None
        if self.station.poll() is None:
            self.station.terminate()
            self.station.wait(15)
        return self.station.returncode

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"file:{self.data / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql, params).fetchall()
        finally:
            connection.close()

    def problems(self, device: str | None = None) -> list[tuple[str, int | None, str]]:
        rows = self.query("SELECT kind, seq, reason FROM problems" + (" WHERE device = ?" if device else "")
                          + " ORDER BY id", *([device] if device else []))
        return [(str(k), s, str(r)) for k, s, r in rows]

    def device_copy(self, device_id: str) -> Path:
        return self.data / "devices" / device_id

    def evidence_digest(self) -> str:
        """A hash over every stored evidence file (ledger copies, objects): what no bad input may change."""
        digest = hashlib.sha256()
        for folder in (self.data / "devices", self.data / "objects"):
            if not folder.exists():
                continue
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                digest.update(str(path.relative_to(self.data)).encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    # ------------------------------------------------------------------ devices

    def device_config(self, device_id: str, store: Path, key_path: Path, **sync: Any) -> Path:
        ca, cert, key = self.broker.client_tls(device_id)
        settings = {"broker_host": "127.0.0.1", "broker_port": self.broker.port, "ca": str(ca), "cert": str(cert),
                    "key": str(key), "station_key": str(self.station_pub), "retry_seconds": 0.5,
                    "reply_timeout_seconds": 5, "scan_seconds": 0.5, **sync}
        path = self.root / f"{device_id}.toml"
        path.write_text(dumps({
            "device": {"id": device_id, "officer": "T0001", "store": str(store), "key": str(key_path)},
            "control_socket": {"path": str(self.root / f"{device_id}.sock")},
            "sync": settings,
        }))
        return path

    def sync_once(self, config: Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "bodycam-sync"), "--config", str(config), "--once", "--timeout",
                               str(timeout)], capture_output=True, text=True, timeout=timeout + 30)

    def start_uploader(self, config: Path, once: bool = True, timeout: float = 120) -> subprocess.Popen[bytes]:
        args = [str(BIN / "bodycam-sync"), "--config", str(config)]
        if once:
            args += ["--once", "--timeout", str(timeout)]
        log = open(self.root / f"{config.stem}-uploader.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()
        self.uploaders.append(process)
        return process

    def uploader_log(self, config: Path) -> str:
        path = self.root / f"{config.stem}-uploader.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for process in self.uploaders:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        self.stop_station()


def ledger_lines(store: Path) -> list[bytes]:
    return (store / LEDGER_FILE).read_bytes().splitlines(keepends=True)
