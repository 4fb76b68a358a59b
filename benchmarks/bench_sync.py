"""Sync benchmark: uploader + station through a real Mosquitto, against plain paho through the same broker.

    .venv/bin/python benchmarks/bench_sync.py [--total-mib 1024] [--segment-mib 8] [--devices 20]
        [--fleet-mib-per-device 25] [--verify-mib 256] [--link-mib-s R] [--dir DIR] [--json] [--keep]

Three measurements, each a ratio or a figure taken in the same run on the same machine:

1. Throughput. A device store with --total-mib of segment files (random bytes under real signed segment
   records) is synced by ``bodycam-sync --once`` to ``bodycam-station serve`` through a Mosquitto started
   with the generated TLS + ACL config. The baseline is a plain paho client publishing the same files'
   bytes in chunks of the same size (QoS 1, 20 in flight, the broker's receive maximum) to a plain paho
   subscriber through the same broker, before the station starts. Target: sync >= 80% of the baseline.
   The sync time runs from the uploader's start to its exit after the last acknowledgement (it includes
   the process start, the TLS handshake, the ledger records and every file's verification and fsync).
   With --link-mib-s both clients reach the broker through a proxy pacing the device's uplink (a dock's
   Wi-Fi), which is what limits a real device; unpaced, everything (device, broker, station) shares this
   machine's CPUs and the figure measures the CPU cost of the integrity checks (SHA-256 per chunk on the
   device, per chunk and per file at the station, fsyncs) that the plain client does not do.
2. Fleet. --devices stores of --fleet-mib-per-device each sync at once to one station: aggregate
   throughput and the station process's peak RSS (VmHWM).
3. Verification. The station's receiver (no MQTT: ``Receiver.handle`` called directly) takes in a store
   of --verify-mib: records verified and stored, chunks checked, written, fsynced, each file hashed and
   stored write-once. Baseline: ``hashlib.sha256`` over the same bytes in one thread.

Not part of the test suite. Exit status 0 when every run completed (1 with --check when a target was missed).
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from benchlib import filesystem_of, run_in_workdir, verdict

from agent.evidence.clock import SystemClock
from agent.evidence.keys import DeviceKey, load_or_create_device_key, public_key_pem
from agent.evidence.ledger import Ledger
from agent.evidence.store import LEDGER_FILE, segment_file_name
from sync.broker import free_port, write_broker_setup
from sync.protocol import ChunkHeader, FileOffer, Hello, encode_chunk, up_topic

MIB = 1024 * 1024
CHUNK_KIB = 256
WINDOW_CHUNKS = 32  # the device default (window_chunks)
THROUGHPUT_TARGET = 0.80
BIN = Path(sys.executable).parent


def make_store(root: Path, key_path: Path, device_id: str, total_bytes: int, segment_bytes: int, seed: int) -> int:
    """A device store of random-byte segments with real signed records; returns the bytes of footage."""
    rng = random.Random(seed)
    key = load_or_create_device_key(key_path)
    written = 0
    with Ledger.open(root, key, device_id, boot_reason="benchmark") as ledger:
        index = ledger.layout.next_segment_index()
        while written < total_bytes:
            size = min(segment_bytes, total_bytes - written)
            stored = ledger.layout.write_segment(segment_file_name(index, "ts"), rng.randbytes(size))
            ledger.append("segment", {"file": stored.name, "sha256": stored.sha256, "size": stored.size})
            written += size
            index += 1
    return written


class Broker:
    def __init__(self, folder: Path, devices: list[str]) -> None:
        self.port = free_port()
        self.files = write_broker_setup(folder, port=self.port, devices=devices, user=getpass.getuser())
        self.log = open(folder / "mosquitto.log", "wb")  # noqa: SIM115 - lives as long as the broker
        binary = "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else "mosquitto"
        self.process = subprocess.Popen([binary, "-c", str(self.files.conf)], stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not start; see {folder / 'mosquitto.log'}")

    def tls(self, user: str) -> tuple[str, str, str]:
        if user == "station":
            return str(self.files.ca_cert), str(self.files.station_cert), str(self.files.station_key)
        cert, key = self.files.clients[user]
        return str(self.files.ca_cert), str(cert), str(key)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


class PacedLink:
    """A TCP proxy in front of the broker whose device-to-broker direction is paced to ``rate`` bytes/s: the
    device's uplink (Wi-Fi at the dock), so both the plain client and the uploader meet the same link."""

    def __init__(self, target: tuple[str, int], rate: float) -> None:
        self.target, self.rate = target, rate
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self._lock = threading.Lock()
        self._next_free = 0.0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                device, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for sock in (device, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(device, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, device, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, paced: bool) -> None:
        try:
            while data := source.recv(65536):
                if paced:
                    with self._lock:
                        start = max(time.monotonic(), self._next_free)
                        self._next_free = start + len(data) / self.rate
                    time.sleep(max(0.0, start - time.monotonic()))
                sink.sendall(data)
        except OSError:
            pass  # one side closed: the other pump ends as well
        finally:
            for sock in (source, sink):
                sock.close()

    def close(self) -> None:
        self.listener.close()


def client(broker: Broker, user: str, client_id: str, port: int | None = None) -> mqtt.Client:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    ca, cert, key = broker.tls(user)
    c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    connected = threading.Event()
    c.on_connect = lambda *_args: connected.set()
    c.connect("127.0.0.1", port or broker.port)
    c.loop_start()
    if not connected.wait(10):
        raise RuntimeError(f"{user}: no CONNACK")
    return c


def raw_paho_seconds(broker: Broker, device_id: str, store: Path, chunk: int, device_port: int) -> float:
    """The baseline: the same files' bytes, chunked the same way, published QoS 1 with 20 in flight."""
    files = sorted((store / "segments").iterdir())
    total = sum(f.stat().st_size for f in files)
    received = [0]
    done = threading.Event()
    station = client(broker, "station", "bench-raw-station")

    def on_message(_c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received[0] += len(message.payload)
        if received[0] >= total:
            done.set()

    station.on_message = on_message
    subscribed = threading.Event()
    station.on_subscribe = lambda *_args: subscribed.set()
    station.subscribe(up_topic(device_id, "chunk"), qos=1)
    subscribed.wait(10)
    device = client(broker, device_id, f"{device_id}-raw", device_port)
    window = threading.Semaphore(20)
    device.on_publish = lambda *_args: window.release()
    start = time.perf_counter()
    for path in files:
        with open(path, "rb") as handle:
            while data := handle.read(chunk):
                window.acquire()
                device.publish(up_topic(device_id, "chunk"), data, qos=1)
    if not done.wait(600):
        raise RuntimeError(f"baseline: the subscriber got {received[0]} of {total} bytes")
    seconds = time.perf_counter() - start
    for c in (device, station):
        c.loop_stop()
        c.disconnect()
    return seconds


def station_config(workdir: Path, broker: Broker) -> Path:
    path = workdir / "station.toml"
    path.write_text(f"""[station]
id = "bench-station"
data = "{workdir / 'station-data'}"
key = "{workdir / 'station-ack.key'}"

[broker]
host = "127.0.0.1"
port = {broker.port}
ca = "{broker.files.ca_cert}"
cert = "{broker.files.station_cert}"
key = "{broker.files.station_key}"
""")
    return path


def device_config(workdir: Path, broker: Broker, device_id: str, station_pub: Path, port: int) -> Path:
    folder = workdir / device_id
    cert, key = broker.files.clients[device_id]
    path = folder / "device.toml"
    path.write_text(f"""[device]
id = "{device_id}"
officer = "B0001"
store = "{folder / 'store'}"
key = "{folder / 'device.key'}"

[control_socket]
path = "{folder / 'control.sock'}"

[sync]
broker_host = "127.0.0.1"
broker_port = {port}
ca = "{broker.files.ca_cert}"
cert = "{cert}"
key = "{key}"
station_key = "{station_pub}"
chunk_kib = {CHUNK_KIB}
window_chunks = {WINDOW_CHUNKS}
purge = false
""")
    return path


def station_cli(*args: str) -> None:
    subprocess.run([str(BIN / "bodycam-station"), *args], check=True, capture_output=True)


def start_station(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen([str(BIN / "bodycam-station"), "serve", "--config", str(config)],
                                   stdout=out, stderr=out)
    time.sleep(1.5)  # imports and the CONNACK; the uploader's own start is inside its timed run anyway
    if process.poll() is not None:
        raise RuntimeError(f"bodycam-station serve exited {process.returncode}; see {log}")
    return process


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def enroll(workdir: Path, config: Path, device_id: str) -> Path:
    pub = workdir / device_id / "device.pub"
    key = load_or_create_device_key(workdir / device_id / "device.key")
    pub.write_text(public_key_pem(key.public_key))
    station_cli("add-device", "--config", str(config), "--device", device_id, "--pubkey", str(pub))
    return pub


def sync_devices(configs: list[Path], timeout: float) -> float:
    start = time.perf_counter()
    processes = [subprocess.Popen([str(BIN / "bodycam-sync"), "--config", str(c), "--once", "--timeout",
                                   str(timeout)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                 for c in configs]
    for config, process in zip(configs, processes, strict=True):
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"bodycam-sync {config} exited {process.returncode}: {err.decode()[-2000:]}")
    return time.perf_counter() - start


def throughput_and_fleet(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    fleet_ids = [f"fleet-{n:02d}" for n in range(args.devices)]
    broker = Broker(workdir / "broker", ["bench-1", *fleet_ids])
    station = None
    link = PacedLink(("127.0.0.1", broker.port), args.link_mib_s * MIB) if args.link_mib_s else None
    device_port = link.port if link else broker.port
    try:
        for device_id in ["bench-1", *fleet_ids]:
            (workdir / device_id).mkdir()
        total = make_store(workdir / "bench-1" / "store", workdir / "bench-1" / "device.key", "bench-1",
                           args.total_mib * MIB, args.segment_mib * MIB, seed=1)
        raw_s = raw_paho_seconds(broker, "bench-1", workdir / "bench-1" / "store", CHUNK_KIB * 1024, device_port)

        config = station_config(workdir, broker)
        station_pub = workdir / "station.pub"
        station_pub.write_text(public_key_pem(load_or_create_device_key(workdir / "station-ack.key").public_key))
        configs = {}
        for device_id in ["bench-1", *fleet_ids]:
            enroll(workdir, config, device_id)
            configs[device_id] = device_config(workdir, broker, device_id, station_pub, device_port)
        station = start_station(config, workdir / "station.log")
        sync_s = sync_devices([configs["bench-1"]], timeout=1800)
        fleet_bytes, fleet_s = 0, float("nan")
        for n, device_id in enumerate(fleet_ids):
            fleet_bytes += make_store(workdir / device_id / "store", workdir / device_id / "device.key", device_id,
                                      args.fleet_mib_per_device * MIB, args.segment_mib * MIB, seed=100 + n)
        if fleet_ids:
            fleet_s = sync_devices([configs[d] for d in fleet_ids], timeout=3600)
        rss = peak_rss_mib(station.pid)
    finally:
        if station is not None:
            station.terminate()
            station.wait(30)
        broker.close()
        if link is not None:
            link.close()
    return {
        "link_mib_s": args.link_mib_s,
        "bytes": total,
        "raw_paho_s": raw_s,
        "raw_paho_mb_s": total / raw_s / 1e6,
        "sync_s": sync_s,
        "sync_mb_s": total / sync_s / 1e6,
        "ratio": raw_s / sync_s,
        "fleet_devices": args.devices,
        "fleet_bytes": fleet_bytes,
        "fleet_s": fleet_s,
        "fleet_mb_s": fleet_bytes / fleet_s / 1e6,
        "station_peak_rss_mib": rss,
    }


def verification(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The receiver's intake without MQTT, against raw SHA-256 over the same bytes."""
    from firmware_config.station_config import load_station_config
    from sync.station.index import SqliteIndex
    from sync.station.receiver import Receiver
    from sync.station.report import enroll_device
    from sync.station.store import FilesystemEvidenceStore

    folder = workdir / "verify"
    folder.mkdir()
    device_id = "verify-1"
    store = folder / "store"
    total = make_store(store, folder / "device.key", device_id, args.verify_mib * MIB, args.segment_mib * MIB, 7)
    files = sorted((store / "segments").iterdir())
    blobs = [f.read_bytes() for f in files]
    start = time.perf_counter()
    for blob in blobs:
        hashlib.sha256(blob).hexdigest()
    raw_s = time.perf_counter() - start

    config_path = folder / "station.toml"
    config_path.write_text(f'[station]\nid = "verify"\ndata = "{folder / "data"}"\nkey = "{folder / "ack.key"}"\n')
    config = load_station_config(config_path)
    evidence = FilesystemEvidenceStore(config.data)
    index = SqliteIndex(config.index_path)
    key = DeviceKey.generate()
    device_key = load_or_create_device_key(folder / "device.key")
    enroll_device(index, device_id, device_key.public_key, time.time_ns() // 1000, replace=False)
    receiver = Receiver.open(config=config, store=evidence, index=index, ack_key=key, clock=SystemClock())
    ledger = (store / LEDGER_FILE).read_bytes()
    chunk = CHUNK_KIB * 1024
    # The messages as the uploader sends them, made before the clock starts: only the station is timed.
    messages = [(up_topic(device_id, "hello"), Hello("bench", 0).encode()), (up_topic(device_id, "records"), ledger)]
    for path, blob in zip(files, blobs, strict=True):
        name = f"segments/{path.name}"
        sha = hashlib.sha256(blob).hexdigest()
        messages.append((up_topic(device_id, "file"), FileOffer("bench", name, sha, len(blob)).encode()))
        for offset in range(0, len(blob), chunk):
            data = blob[offset:offset + chunk]
            header = ChunkHeader(name, sha, len(blob), offset, len(data), hashlib.sha256(data).hexdigest())
            messages.append((up_topic(device_id, "chunk"), encode_chunk(header, data)))
    start = time.perf_counter()
    # As the service does under load: batches of what is waiting (up to 64 messages), one group commit each.
    for first in range(0, len(messages), 64):
        receiver.handle_batch([(t, m, None) for t, m in messages[first:first + 64]])
    station_s = time.perf_counter() - start
    stored = sum(1 for f in files if (config.data / "devices" / device_id / "segments" / f.name).exists())
    index.close()
    return {"bytes": total, "files": len(files), "stored": stored, "raw_sha256_s": raw_s,
            "raw_sha256_mb_s": total / raw_s / 1e6, "station_s": station_s, "station_mb_s": total / station_s / 1e6,
            "ratio": raw_s / station_s}


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"filesystem": filesystem_of(workdir), "cpus": os.cpu_count()}
    result["verification"] = verification(args, workdir)
    result["sync"] = throughput_and_fleet(args, workdir)
    return result


def print_table(result: dict[str, Any]) -> None:
    s, v = result["sync"], result["verification"]
    fs = result["filesystem"]
    print(f"machine: {result['cpus']} CPUs; files on {fs['type']} ({fs['mount']})")
    link = f"device uplink paced to {s['link_mib_s']} MiB/s" if s["link_mib_s"] else "unpaced loopback"
    print(f"throughput ({s['bytes'] / MIB:.0f} MiB of segments, {CHUNK_KIB} KiB chunks, {link}):")
    print(f"  plain paho through the broker: {s['raw_paho_s']:.1f} s = {s['raw_paho_mb_s']:.1f} MB/s")
    print(f"  bodycam-sync -> station, verified, stored, acked: {s['sync_s']:.1f} s = {s['sync_mb_s']:.1f} MB/s")
    print(f"  ratio: {s['ratio'] * 100:.0f}% (target >= {THROUGHPUT_TARGET * 100:.0f}%): "
          f"{verdict(s['ratio'] >= THROUGHPUT_TARGET)}")
    print(f"fleet: {s['fleet_devices']} devices at once, {s['fleet_bytes'] / MIB:.0f} MiB in all: "
          f"{s['fleet_s']:.1f} s = {s['fleet_mb_s']:.1f} MB/s aggregate; "
          f"station peak RSS {s['station_peak_rss_mib']:.0f} MiB")
    print(f"verification ({v['bytes'] / MIB:.0f} MiB, {v['files']} files, {v['stored']} stored):")
    print(f"  raw sha256, 1 thread: {v['raw_sha256_mb_s']:.0f} MB/s; station intake: {v['station_mb_s']:.0f} MB/s "
          f"= {v['ratio'] * 100:.0f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--total-mib", type=int, default=1024)
    parser.add_argument("--segment-mib", type=int, default=8)
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--fleet-mib-per-device", type=int, default=25)
    parser.add_argument("--verify-mib", type=int, default=256)
    parser.add_argument("--link-mib-s", type=float, default=0, help="pace the devices' uplink to this many MiB/s "
                        "(0: unpaced loopback, where the machine's CPU is the bottleneck)")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--check", action="store_true", help="exit 1 when the throughput target is missed")
    args = parser.parse_args(argv)
    result = run_in_workdir("bench-sync-", args, run_benchmark, print_table)
    return 1 if args.check and result["sync"]["ratio"] < THROUGHPUT_TARGET else 0


if __name__ == "__main__":
    sys.exit(main())
