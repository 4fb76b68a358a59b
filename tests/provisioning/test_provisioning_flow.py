"""The technician's whole flow, as real commands: station init, device init, enroll, apply, a sync through the
generated Mosquitto config with the issued certificates; then a foreign and a revoked certificate refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from broker_fixture import BrokerConnectError, MosquittoBroker, connect, mosquitto_binary
from helpers import stand_in_store, wait_for

from agent.evidence.keys import load_device_key, public_key_pem
from firmware_config.device_config import load_device_config
from sync.broker import TOOLS_USER, BrokerFiles, free_port, issue_device_certificate
from sync.broker_certs import create_ca, issue_certificate, write_pem_files

BIN = Path(sys.executable).parent
DEVICE = "cam-a"


def run(*args: str, expect: int = 0) -> str:
    result = subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=120)
    out = result.stdout + result.stderr
    assert result.returncode == expect, f"{' '.join(args)} -> {result.returncode}:\n{out[-3000:]}"
    assert "Traceback" not in out
    return out


class InitBroker(MosquittoBroker):
    """Mosquitto on the folder and config ``bodycam-station init`` wrote (not the fixture's own setup)."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder, self.port, self.binary = folder, port, mosquitto_binary()
        self.log_path = folder.parent / "mosquitto.log"
        self.clients = []
        self._process = None
        self.max_packet_bytes = 4 * 1024 * 1024
        self.files = BrokerFiles(
            folder=folder, ca_cert=folder / "ca.crt", ca_key=folder / "ca.key", server_cert=folder / "server.crt",
            server_key=folder / "server.key", station_cert=folder / "station.crt",
            station_key=folder / "station.key", clients={}, acl=folder / "acl", conf=folder / "mosquitto.conf",
            tools_cert=folder / "station-tools.crt", tools_key=folder / "station-tools.key", crl=folder / "crl.pem",
        )

    def reload(self) -> None:
        """What ``systemctl reload bodycam-broker`` does (ExecReload): SIGHUP."""
        assert self._process is not None
        self._process.send_signal(signal.SIGHUP)

    def accepts(self, tls: tuple[Path, Path, Path]) -> bool:
        try:
            connect(self, None, tls=tls, track=False, timeout=3).close()
        except BrokerConnectError:
            return False
        return True


def device_tls(device_dir: Path) -> tuple[Path, Path, Path]:
    return device_dir / "ca.pem", device_dir / "mqtt.crt", device_dir / "mqtt.key"


@pytest.mark.slow
def test_station_init_device_init_enroll_apply_sync_then_foreign_and_revoked_refused(tmp_path: Path) -> None:
    mosquitto_binary()
    station_dir, device_dir = tmp_path / "station", tmp_path / "device"
    port = free_port()
    run_as = ["--run-as", "root"] if os.geteuid() == 0 else []  # root Mosquitto drops to a user of our choosing

    # The technician: the station, then the device (synthetic camera), then enrolment both ways.
    out = run("bodycam-station", "init", "--dir", str(station_dir), "--host", "127.0.0.1", "--port", str(port),
              "--station-id", "station-t", *run_as)
    assert "created" in out and "nothing changed" not in out
    config = station_dir / "station.toml"
    out = run("bodycam-provision", "init", "--dir", str(device_dir), "--device-id", DEVICE, "--hardware", "synthetic",
              "--store", str(device_dir / "store"))
    request = device_dir / f"{DEVICE}.request.json"
    assert f"wrote enrolment request {request}" in out
    key = load_device_key(device_dir / "device.key")
    stand_in_store(device_dir / "store", key, DEVICE, seconds=3)  # the device recorded something
    bundle = tmp_path / "carried" / "bundle.json"
    bundle.parent.mkdir()
    assert f"device {DEVICE}: enrolled with key {key.fingerprint}" in run(
        "bodycam-station", "enroll", "--config", str(config), str(request), "--out", str(bundle))
    run("bodycam-provision", "apply", "--dir", str(device_dir), str(bundle))
    device_config = load_device_config(device_dir / "device.toml")
    assert (device_config.sync.broker_host, device_config.sync.broker_port) == ("127.0.0.1", port)

    broker = InitBroker(station_dir / "broker", port)
    receiver = None
    try:
        broker.start()
        log = tmp_path / "receiver.log"
        with open(log, "ab") as handle:
            receiver = subprocess.Popen([str(BIN / "bodycam-station"), "serve", "--config", str(config)],
                                        stdout=handle, stderr=handle)
        wait_for(lambda: "subscribed" in log.read_text(errors="replace") or receiver.poll() is not None, 15,
                 "the receiver to subscribe")
        assert receiver.poll() is None, log.read_text()

        run("bodycam-sync", "--config", str(device_dir / "device.toml"), "--once", "--timeout", "60")
        pub = tmp_path / "device.pub"
        pub.write_text(public_key_pem(key.public_key))
        assert "INTACT:" in run("bodycam-verify", str(station_dir / "data" / "devices" / DEVICE), "--pubkey", str(pub))

        # A certificate for the same device id from another CA never gets past the TLS handshake.
        impostor = issue_certificate(*create_ca("impostor CA"), DEVICE, server=False)
        foreign_cert, foreign_key = write_pem_files(tmp_path / "foreign", DEVICE, *impostor)
        with pytest.raises(BrokerConnectError):
            connect(broker, DEVICE, tls=(device_dir / "ca.pem", foreign_cert, foreign_key))

        # Revocation: a connection opened before it survives a reload (documented); new handshakes do not.
        still_open = connect(broker, DEVICE, tls=device_tls(device_dir), client_id=f"{DEVICE}-open")
        # The reload is seen through a second revoked certificate of another name: a probe with DEVICE's own
        # certificate accepted before the reload would push still_open off (client id = certificate name).
        probe_cert, probe_key = issue_device_certificate(station_dir / "broker", "cam-probe")
        probe = (device_dir / "ca.pem", probe_cert, probe_key)
        assert broker.accepts(probe)
        out = run("bodycam-station", "revoke", "--config", str(config), "--device", DEVICE)
        assert "reload the broker" in out
        run("bodycam-station", "revoke", "--config", str(config), "--device", "cam-probe")
        broker.reload()
        wait_for(lambda: not broker.accepts(probe), 10, "the revoked certificates to be refused")
        assert not broker.accepts(device_tls(device_dir))
        assert "certificate verify failed" in broker.log_tail(50)
        # The station's own certificates are not on the list (the tools' here: one as "station" would push the
        # running receiver off, the client id being the certificate's name).
        connect(broker, TOOLS_USER).close()
        # The device's own uploader says what a refused handshake may mean, that there was no connection, and that
        # the earlier sync acknowledged everything.
        refused = run("bodycam-sync", "--config", str(device_dir / "device.toml"), "--once", "--timeout", "4",
                      expect=1)
        assert "refuses this device's certificate (revoked, or issued by another CA)" in refused
        assert "no connection to the station in this run" in refused and "not acknowledged yet" not in refused

        # An upload that still arrives (over the connection opened before) is refused and reported.
        still_open.publish_wait(f"bodycam/{DEVICE}/up/hello", b"{}")
        problems = wait_for(lambda: "revoked" in (text := run("bodycam-station", "problems", "--config", str(config),
                                                              "--device", DEVICE, expect=1)) and text, 15,
                            "the revoked device's upload to be reported")
        assert f"unknown-device: device {DEVICE}: device revoked: message refused, nothing stored" in problems

        # Re-enrolment is explicit and issues a new certificate, which the reloaded broker accepts.
        run("bodycam-station", "enroll", "--config", str(config), str(request), "--out", str(bundle), "--replace")
        run("bodycam-provision", "apply", "--dir", str(device_dir), str(bundle))
        broker.reload()
        wait_for(lambda: broker.accepts(device_tls(device_dir)), 10, "the new certificate to be accepted")
    finally:
        if receiver is not None and receiver.poll() is None:
            receiver.terminate()
            receiver.wait(15)
        broker.close()
