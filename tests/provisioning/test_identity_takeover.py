"""Issue 12, fault 3, as an attacker would try it: a station and two devices made with the documented flow, the
broker on the config ``bodycam-station init`` wrote; device cam-b, with its own genuine certificate, connects again
and again under the receiver's, the station tools' and cam-a's client ids. Nobody is pushed off, cam-a syncs, an
assignment goes out, and what waits in the receiver's session while it is down survives."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from broker_fixture import BrokerConnectError, connect, mosquitto_binary
from helpers import stand_in_store, wait_for
from test_provisioning_flow import BIN, InitBroker, device_tls, run

from agent.evidence.keys import load_device_key, public_key_pem
from agent.evidence.store import LEDGER_FILE
from sync.broker import free_port
from sync.protocol import up_topic

VICTIM, ATTACKER = "cam-a", "cam-b"
SPOOFED = ["bodycam-station", "station", "station-tools", VICTIM]
INTERVAL_S = 0.2


class Spoofer(threading.Thread):
    """ATTACKER's genuine certificate, a new connection every INTERVAL_S asking for each SPOOFED id in turn."""

    def __init__(self, broker: InitBroker, tls: tuple[Path, Path, Path]) -> None:
        super().__init__(daemon=True)
        self.broker, self.tls = broker, tls
        self.stop = threading.Event()
        self.connected = 0
        self.errors: list[str] = []

    def run(self) -> None:
        attempt = 0
        while not self.stop.is_set():
            client_id = SPOOFED[attempt % len(SPOOFED)]
            attempt += 1
            try:
                client = connect(self.broker, None, tls=self.tls, client_id=client_id, track=False, timeout=3)
            except BrokerConnectError as exc:
                self.errors.append(str(exc))
            else:
                self.connected += 1
                self.stop.wait(INTERVAL_S / 2)
                client.close()
            self.stop.wait(INTERVAL_S / 2)

    def __enter__(self) -> Spoofer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.join(10)


def provision(tmp_path: Path, station_dir: Path, device: str) -> Path:
    folder = tmp_path / device
    run("bodycam-provision", "init", "--dir", str(folder), "--device-id", device, "--hardware", "synthetic",
        "--store", str(folder / "store"))
    stand_in_store(folder / "store", load_device_key(folder / "device.key"), device, seconds=3)
    bundle = tmp_path / f"{device}.bundle.json"
    run("bodycam-station", "enroll", "--config", str(station_dir / "station.toml"),
        str(folder / f"{device}.request.json"), "--out", str(bundle))
    run("bodycam-provision", "apply", "--dir", str(folder), str(bundle))
    return folder


def stored_head(data: Path, device: str) -> int:
    connection = sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        (head,) = connection.execute("SELECT COALESCE(MAX(seq), 0) FROM records WHERE device = ?", (device,)).fetchone()
        return int(head)
    finally:
        connection.close()


def takeovers(log: str) -> list[str]:
    return [line for line in log.splitlines() if "already connected, closing old connection" in line]


@pytest.mark.slow
def test_a_device_spoofing_client_ids_disturbs_neither_the_receiver_nor_another_device(tmp_path: Path) -> None:
    mosquitto_binary()
    station_dir, port = tmp_path / "station", free_port()
    run_as = ["--run-as", "root"] if os.geteuid() == 0 else []
    run("bodycam-station", "init", "--dir", str(station_dir), "--host", "127.0.0.1", "--port", str(port),
        "--station-id", "station-t", *run_as)
    config = station_dir / "station.toml"
    victim, attacker = (provision(tmp_path, station_dir, device) for device in (VICTIM, ATTACKER))
    broker = InitBroker(station_dir / "broker", port)
    receiver_log = tmp_path / "receiver.log"
    receiver: subprocess.Popen[bytes] | None = None

    def start_receiver() -> subprocess.Popen[bytes]:
        with open(receiver_log, "ab") as handle:
            process = subprocess.Popen([str(BIN / "bodycam-station"), "serve", "--config", str(config)],
                                       stdout=handle, stderr=handle)
        wait_for(lambda: receiver_log.read_text(errors="replace").count("subscribed") > starts
                 or process.poll() is not None, 15, "the receiver to subscribe")
        assert process.poll() is None, receiver_log.read_text()
        return process

    try:
        broker.start()
        starts = 0
        receiver = start_receiver()
        starts = 1
        with Spoofer(broker, device_tls(attacker)) as spoofer:
            # cam-a's whole sync and an officer assignment, while cam-b keeps asking for their client ids.
            run("bodycam-sync", "--config", str(victim / "device.toml"), "--once", "--timeout", "60")
            run("bodycam-station", "assign", "--config", str(config), "--device", VICTIM, "--officer", "A1")
            wait_for(lambda: spoofer.connected >= 2 * len(SPOOFED), 20, "the spoofer to connect a few times")
        assert spoofer.errors == []
        pub = tmp_path / "cam-a.pub"
        pub.write_text(public_key_pem(load_device_key(victim / "device.key").public_key))
        assert "INTACT:" in run("bodycam-verify", str(station_dir / "data" / "devices" / VICTIM), "--pubkey", str(pub))
        assert "disconnected from broker" not in receiver_log.read_text(errors="replace")
        assert takeovers(broker.log_tail(100_000)) == []

        # The receiver away: what cam-a sends waits in the receiver's persistent session, and cam-b's clean
        # starts under the receiver's names do not discard it.
        head = stored_head(station_dir / "data", VICTIM)
        receiver.terminate()
        assert receiver.wait(15) == 0
        ledger = victim / "store" / LEDGER_FILE
        new_head = stand_in_store(victim / "store", load_device_key(victim / "device.key"), VICTIM, seconds=0)
        lines = ledger.read_bytes().splitlines(keepends=True)[head:]
        assert len(lines) == new_head - head > 0
        sender = connect(broker, None, tls=device_tls(victim), client_id=VICTIM, track=False)
        sender.publish_wait(up_topic(VICTIM, "records"), b"".join(lines))
        sender.close()
        with Spoofer(broker, device_tls(attacker)) as spoofer:
            wait_for(lambda: spoofer.connected >= 2 * len(SPOOFED), 20, "the spoofer to connect a few times")
        receiver = start_receiver()
        # Nothing resends: only the session the broker kept can bring these records to the station.
        wait_for(lambda: stored_head(station_dir / "data", VICTIM) == new_head, 15,
                 "the records queued in the receiver's session to be stored")
        assert takeovers(broker.log_tail(100_000)) == []
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.terminate()
            receiver.wait(15)
        broker.close()
