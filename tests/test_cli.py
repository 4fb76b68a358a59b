"""The command lines: exit codes, one-line reasons, no tracebacks, no private key material in any output.

Most cases call ``main([...])`` in-process (capsys); a few run the installed console scripts next to
``sys.executable`` to prove what a user sees: the exit code and the absence of a traceback.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import stand_in_store

from agent import cli as agent_cli
from agent import verify_cli
from agent.evidence.keys import DeviceKey, load_device_key, load_or_create_device_key, public_key_pem
from agent.evidence.ledger import Ledger
from agent.evidence.store import read_records
from agent.evidence.verify import verify_store
from firmware_config import provision_cli
from sync import cli as sync_cli
from sync.broker_certs import create_ca, issue_certificate, write_pem_files

BIN = Path(sys.executable).parent
DEVICE = "cli-dev-01"


# --- helpers ---------------------------------------------------------------------------------------


def run_script(name: str, *args: str | bytes | Path) -> subprocess.CompletedProcess[bytes]:
    """Run an installed console script; stdout is strict UTF-8 so an unescaped surrogate would crash it."""
    script = BIN / name
    if not script.exists():
        pytest.fail(f"console script {script} is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    env.pop("PYTHONUTF8", None)
    result = subprocess.run([script, *args], capture_output=True, env=env, timeout=120, check=False)
    assert b"Traceback" not in result.stdout + result.stderr, result.stderr.decode(errors="replace")
    return result


def one_line(text: str) -> str:
    """The text must be exactly one line (with its newline); returns it without the newline."""
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text[:-1]


def make_store(root: Path, seconds: int = 2, key: DeviceKey | None = None) -> DeviceKey:
    key = key or DeviceKey.generate()
    stand_in_store(root, key, DEVICE, seconds)
    return key


def write_pem(path: Path, key: DeviceKey) -> Path:
    path.write_text(public_key_pem(key.public_key))
    return path


def run_verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = verify_cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _keep_sigterm_handler() -> Iterator[None]:
    """agent.cli.main installs a SIGTERM handler; give the test process its own back afterwards."""
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


@pytest.fixture
def sim_store(tmp_path: Path) -> tuple[Path, DeviceKey]:
    root = tmp_path / "store"
    return root, make_store(root)


# --- bodycam-verify --------------------------------------------------------------------------------


def test_verify_intact_store(capsys: pytest.CaptureFixture[str], sim_store: tuple[Path, DeviceKey]) -> None:
    root, key = sim_store
    code, out, err = run_verify(capsys, str(root))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"store {root}"
    assert f"device {DEVICE}  key {key.fingerprint[:16]}... (not pinned)" in lines[1]
    assert lines[-1].startswith("INTACT: 5 records verified, head seq 5 ")
    assert not any(line.startswith("PROBLEM") for line in lines)


def test_verify_with_pinned_key(
    capsys: pytest.CaptureFixture[str], sim_store: tuple[Path, DeviceKey], tmp_path: Path
) -> None:
    root, key = sim_store
    pem = write_pem(tmp_path / "device.pub", key)
    hex_file = tmp_path / "device.hex"
    hex_file.write_text(key.public_raw.hex() + "\n")
    raw_file = tmp_path / "device.raw"
    raw_file.write_bytes(key.public_raw)
    for pub in (pem, hex_file, raw_file):
        code, out, err = run_verify(capsys, str(root), "--pubkey", str(pub))
        assert (code, err) == (0, ""), pub
        assert f"key {key.fingerprint[:16]}... (pinned)" in out


def test_verify_pinned_to_another_key_fails(
    capsys: pytest.CaptureFixture[str], sim_store: tuple[Path, DeviceKey], tmp_path: Path
) -> None:
    root, _key = sim_store
    other = write_pem(tmp_path / "other.pub", DeviceKey.generate())
    code, out, err = run_verify(capsys, str(root), "--pubkey", str(other))
    assert (code, err) == (1, "")
    assert "PROBLEM seq 1: signed by another key" in out
    assert out.splitlines()[-1].startswith("NOT INTACT: 5 problem(s)")


def test_verify_path_is_an_empty_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    code, out, err = run_verify(capsys, str(path))
    assert (code, out) == (2, "")
    assert one_line(err) == f"bodycam-verify: {path}: not a folder (a store is a folder holding ledger.jsonl)"
    result = run_script("bodycam-verify", path)
    assert result.returncode == 2 and result.stdout == b""
    assert one_line(result.stderr.decode()) == one_line(err)


def test_verify_ledger_of_random_bytes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "junk"
    root.mkdir()
    noise = random.Random(20240601).randbytes(5000)
    (root / "ledger.jsonl").write_bytes(noise + b"\n")
    code, out, err = run_verify(capsys, str(root))
    assert (code, err) == (1, "")
    assert "PROBLEM ledger.jsonl line 1: malformed record (" in out
    assert out.splitlines()[-1].startswith("NOT INTACT: ")
    result = run_script("bodycam-verify", root)
    assert result.returncode == 1
    assert b"PROBLEM ledger.jsonl line 1: malformed record" in result.stdout


def test_verify_empty_ledger(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "empty-store"
    root.mkdir()
    (root / "ledger.jsonl").write_bytes(b"")
    code, out, _err = run_verify(capsys, str(root))
    assert code == 1
    assert "PROBLEM ledger.jsonl: empty: the ledger holds no records" in out


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: None, "no such folder"),
        (lambda p: p.mkdir(), "no ledger.jsonl: not a device store"),
        (lambda p: (p / "ledger.jsonl").mkdir(parents=True), "no ledger.jsonl: not a device store"),
    ],
    ids=["missing", "no-ledger", "ledger-is-a-folder"],
)
def test_verify_unreadable_input_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, make: object, reason: str
) -> None:
    path = tmp_path / "store"
    make(path)  # type: ignore[operator]
    code, out, err = run_verify(capsys, str(path))
    assert (code, out) == (2, "")
    assert one_line(err) == f"bodycam-verify: {path}: {reason}"


def test_verify_non_utf8_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/caf\xe9"
    root = Path(os.fsdecode(raw))  # surrogate-escaped, as argv gives it
    make_store(root)
    shown = os.fsdecode(os.fsencode(tmp_path)) + "/caf\\xe9"

    code, out, err = run_verify(capsys, os.fsdecode(raw))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"store {shown}"

    missing = os.fsdecode(raw + b"-missing")
    code, out, err = run_verify(capsys, missing)
    assert (code, out) == (2, "")
    assert one_line(err) == f"bodycam-verify: {shown}-missing: no such folder"

    code, out, _err = run_verify(capsys, missing, "--json")
    assert code == 2 and json.loads(out) == {
        "path": f"{shown}-missing", "intact": False, "error": f"{shown}-missing: no such folder"
    }

    result = run_script("bodycam-verify", raw)
    assert result.returncode == 0
    assert result.stdout.startswith(b"store " + os.fsencode(tmp_path) + b"/caf\\xe9\n")
    result = run_script("bodycam-verify", raw + b"-missing")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.endswith(b"/caf\\xe9-missing: no such folder\n")
    result = run_script("bodycam-verify", raw, "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["intact"] is True and report["path"].endswith("/caf\\xe9")


@pytest.mark.parametrize(
    "argv",
    [[], ["a", "b"], ["--bogus", "x"], ["x", "--pubkey"], ["--json"], ["x", "--json=yes"]],
    ids=["nothing", "two-paths", "unknown-option", "pubkey-without-file", "json-only", "json-with-value"],
)
def test_verify_wrong_arguments(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        verify_cli.main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err).startswith("bodycam-verify: ") and err.rstrip().endswith("(see --help)")


def test_verify_wrong_arguments_in_a_real_process() -> None:
    result = run_script("bodycam-verify")
    assert (result.returncode, result.stdout) == (2, b"")
    assert one_line(result.stderr.decode()).startswith("bodycam-verify: the following arguments are required: path")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "not found"),
        (b"not a key at all", "not a PEM, hex or raw Ed25519 public key"),
        (b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "malformed PEM"),
        (b"\xff" * 40, "not a PEM, hex or raw Ed25519 public key"),
        ("folder", "cannot read"),
    ],
    ids=["missing", "garbage", "bad-pem", "binary", "folder"],
)
def test_verify_bad_pubkey_file_exits_2(
    capsys: pytest.CaptureFixture[str],
    sim_store: tuple[Path, DeviceKey],
    tmp_path: Path,
    content: bytes | str | None,
    reason: str,
) -> None:
    root, _key = sim_store
    pub = tmp_path / "device.pub"
    if content == "folder":
        pub.mkdir()
    elif isinstance(content, bytes):
        pub.write_bytes(content)
    code, out, err = run_verify(capsys, str(root), "--pubkey", str(pub))
    assert (code, out) == (2, "")
    assert one_line(err).startswith(f"bodycam-verify: public key file {pub}: {reason}")


def test_verify_bad_pubkey_in_a_real_process(sim_store: tuple[Path, DeviceKey], tmp_path: Path) -> None:
    root, _key = sim_store
    pub = tmp_path / "garbage.pub"
    pub.write_bytes(b"\x00garbage\n")
    result = run_script("bodycam-verify", root, "--pubkey", pub)
    assert (result.returncode, result.stdout) == (2, b"")
    assert b"not a PEM, hex or raw Ed25519 public key" in result.stderr


def test_verify_json_intact_tampered_unreadable(
    capsys: pytest.CaptureFixture[str], sim_store: tuple[Path, DeviceKey], tmp_path: Path
) -> None:
    root, key = sim_store
    code, out, _err = run_verify(capsys, str(root), "--json")
    report = json.loads(out)
    assert code == 0 and report["intact"] is True and report["problems"] == []
    assert (report["records"], report["last_seq"], report["segments"]) == (5, 5, 2)
    assert report["key_fingerprint"] == key.fingerprint and report["device"] == DEVICE

    segment = root / "segments" / "000002.bin"
    data = bytearray(segment.read_bytes())
    data[100] ^= 0x01
    segment.chmod(0o644)
    segment.write_bytes(bytes(data))
    code, out, _err = run_verify(capsys, str(root), "--json")
    report = json.loads(out)
    assert code == 1 and report["intact"] is False
    assert [p["text"] for p in report["problems"]] == ["seq 4: segment 000002.bin: sha256 mismatch"]

    code, out, err = run_verify(capsys, str(tmp_path / "nowhere"), "--json")
    assert code == 2 and json.loads(out)["intact"] is False
    assert "no such folder" in json.loads(out)["error"] and one_line(err)

    result = run_script("bodycam-verify", root, "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["intact"] is False


# --- bodycam-agent simulate ------------------------------------------------------------------------


def test_simulate_writes_a_verifiable_store_and_reruns_continue(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    root = tmp_path / "sim"
    sim = ["simulate", "--store", str(root), "--seconds", "3", "--fast", "--segment-seconds", "1"]
    assert agent_cli.main(sim) == 0
    out, err = capsys.readouterr()
    key_file = root / "identity" / "device.key"
    key = load_device_key(key_file)
    assert err == ""
    assert one_line(out) == (
        f"simulated device sim-0001: wrote 6 records and 3 segments (90 frames) into {root}; head seq 6; "
        f"key fingerprint {key.fingerprint}"
    )
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in (root / "segments").iterdir()) == ["000001.ts", "000002.ts", "000003.ts"]
    report = verify_store(root, key.public_key)
    assert report.intact and report.last_seq == 6

    assert agent_cli.main(sim) == 0
    out, _err = capsys.readouterr()
    assert "wrote 6 records and 3 segments" in out and "head seq 12;" in out
    assert sorted(p.name for p in (root / "segments").iterdir()) == [f"{i:06d}.ts" for i in range(1, 7)]
    report = verify_store(root, key.public_key)
    assert report.intact, report.problems
    assert (report.records, report.first_seq, report.last_seq, report.segments) == (12, 1, 12, 6)


def test_simulate_in_a_real_process(tmp_path: Path) -> None:
    root = tmp_path / "sim"
    result = run_script(
        "bodycam-agent", "simulate", "--store", root, "--seconds", "2", "--fast", "--device-id", "cam-7",
        "--segment-seconds", "1",
    )
    assert result.returncode == 0, result.stderr
    assert b"simulated device cam-7: wrote 5 records and 2 segments (60 frames)" in result.stdout
    report = verify_store(root)
    assert report.intact and report.device == "cam-7"


@pytest.mark.parametrize(
    "extra",
    [
        ["--seconds", "abc"],
        ["--seconds", "-1"],
        ["--seconds", "86401"],
        ["--seconds", "1.5"],
        ["--device-id", "bad id"],
        ["--device-id", "../etc"],
        ["--device-id", "x" * 65],
        ["--device-id", ""],
    ],
)
def test_simulate_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: list[str]) -> None:
    root = tmp_path / "sim"
    with pytest.raises(SystemExit) as caught:
        agent_cli.main(["simulate", "--store", str(root), "--fast", *extra])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err).startswith("bodycam-agent simulate: argument ")
    assert extra[0] in err
    assert not root.exists()  # nothing was written


def test_simulate_with_a_missing_scenario_refuses_and_creates_nothing(capsys: pytest.CaptureFixture[str],
                                                                    tmp_path: Path) -> None:
    root = tmp_path / "sim"
    assert agent_cli.main(["simulate", "--store", str(root), "--scenario", str(tmp_path / "nonexistent.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "nonexistent.toml" in one_line(err)
    assert not root.exists()  # no store, no identity key


def test_verify_into_a_closed_pipe_exits_quietly_with_its_verdict(tmp_path: Path) -> None:
    """``bodycam-verify --json | head -c 100``: the reader goes away; no traceback, the verdict's own code.
    The report (a note per purged file) is far larger than the pipe, so the writer always meets the closed end."""
    root = tmp_path / "store"
    key = make_store(root, seconds=120)
    with Ledger.open(root, key, DEVICE) as ledger:
        for signed in [r for r in read_records(root) if r.record.type == "segment"]:
            body = signed.record.body
            ledger.append("purge", {"file": body["file"], "sha256": body["sha256"], "reason": "test"})
    verify = subprocess.Popen([BIN / "bodycam-verify", "--json", root], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    assert verify.stdout is not None
    fcntl.fcntl(verify.stdout.fileno(), fcntl.F_SETPIPE_SZ, 4096)
    assert len(verify.stdout.read(100)) == 100
    verify.stdout.close()
    _, err = verify.communicate(timeout=60)
    assert err == b"" and verify.returncode == 0, (verify.returncode, err)


def test_agent_without_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        agent_cli.main([])
    assert caught.value.code == 2
    assert one_line(capsys.readouterr().err).startswith("bodycam-agent: ")


def test_simulate_with_an_unsafe_key_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key_file = tmp_path / "device.key"
    load_or_create_device_key(key_file)
    key_file.chmod(0o644)
    root = tmp_path / "sim"
    code = agent_cli.main(["simulate", "--store", str(root), "--key", str(key_file), "--seconds", "1", "--fast"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert one_line(err) == f"bodycam-agent: key file {key_file}: mode 0644 lets others read it; must be 0600"
    assert not root.exists()


def test_simulate_into_a_store_of_another_key_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    root = tmp_path / "sim"
    assert agent_cli.main(["simulate", "--store", str(root), "--seconds", "1", "--fast"]) == 0
    before = (root / "ledger.jsonl").read_bytes()
    capsys.readouterr()
    code = agent_cli.main(
        ["simulate", "--store", str(root), "--key", str(tmp_path / "other.key"), "--seconds", "1", "--fast"]
    )
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert "refusing to append" in one_line(err)
    assert (root / "ledger.jsonl").read_bytes() == before


# --- bodycam-provision -----------------------------------------------------------------------------


def test_provision_create_and_show_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key_file = tmp_path / "identity" / "device.key"
    assert provision_cli.main(["create-key", "--key", str(key_file)]) == 0
    created, err = capsys.readouterr()
    assert err == ""
    key = load_device_key(key_file)
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    content = key_file.read_bytes()
    lines = created.splitlines()
    assert lines[0] == f"fingerprint {key.fingerprint}"
    assert lines[1] == f"public key (hex) {key.public_raw.hex()}"
    assert "\n".join(lines[2:]) == public_key_pem(key.public_key).rstrip()
    assert "PRIVATE" not in created

    assert provision_cli.main(["create-key", "--key", str(key_file)]) == 0  # exists: shown, not replaced
    assert capsys.readouterr().out == created
    assert key_file.read_bytes() == content
    assert provision_cli.main(["show-key", "--key", str(key_file)]) == 0
    assert capsys.readouterr().out == created

    assert provision_cli.main(["show-key", "--key", str(key_file), "--json"]) == 0
    out = capsys.readouterr().out
    assert "PRIVATE" not in out
    assert json.loads(out) == {
        "key_file": str(key_file),
        "fingerprint": key.fingerprint,
        "public_key_hex": key.public_raw.hex(),
        "public_key_pem": public_key_pem(key.public_key),
    }


def test_provision_pem_pins_verification(tmp_path: Path) -> None:
    """The demo's path, in real processes: create-key, show-key --pem > FILE, simulate, verify --pubkey FILE."""
    key_file = tmp_path / "identity" / "device.key"
    created = run_script("bodycam-provision", "create-key", "--key", key_file)
    assert created.returncode == 0 and b"PRIVATE" not in created.stdout + created.stderr
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pem = run_script("bodycam-provision", "show-key", "--key", key_file, "--pem")
    assert pem.returncode == 0 and b"PRIVATE" not in pem.stdout
    assert pem.stdout.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert pem.stdout.endswith(b"-----END PUBLIC KEY-----\n")
    pub = tmp_path / "device.pub"
    pub.write_bytes(pem.stdout)

    root = tmp_path / "store"
    sim = run_script("bodycam-agent", "simulate", "--store", root, "--key", key_file, "--seconds", "2", "--fast")
    assert sim.returncode == 0, sim.stderr
    assert not (root / "identity").exists()  # the given key was used, none created in the store
    verified = run_script("bodycam-verify", root, "--pubkey", pub)
    assert verified.returncode == 0, verified.stdout
    assert b"(pinned)" in verified.stdout and b"INTACT: 5 records verified" in verified.stdout


def test_provision_show_missing_key_exits_1(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key_file = tmp_path / "nowhere" / "device.key"
    assert provision_cli.main(["show-key", "--key", str(key_file)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert one_line(err) == f"bodycam-provision: key file {key_file}: not found"
    assert not key_file.parent.exists()  # show-key never creates
    result = run_script("bodycam-provision", "show-key", "--key", key_file)
    assert (result.returncode, result.stdout) == (1, b"")


def test_provision_refuses_unsafe_or_garbage_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    key_file = tmp_path / "device.key"
    load_or_create_device_key(key_file)
    key_file.chmod(0o644)
    for command in ("show-key", "create-key"):
        assert provision_cli.main([command, "--key", str(key_file)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and "mode 0644 lets others read it" in one_line(err)
        assert "PRIVATE" not in err
    key_file.write_bytes(b"garbage")
    key_file.chmod(0o600)
    assert provision_cli.main(["create-key", "--key", str(key_file)]) == 1
    assert "not an unencrypted PEM private key" in one_line(capsys.readouterr().err)
    assert key_file.read_bytes() == b"garbage"


@pytest.mark.parametrize("argv", [[], ["create-key"], ["show-key", "--key", "k", "--json", "--pem"], ["rotate"]])
def test_provision_wrong_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        provision_cli.main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).startswith("bodycam-provision")


# --- bodycam-sync (tests/uploader/ runs it against a real broker) ------------------------------------


def sync_config(tmp_path: Path, sync: dict[str, object]) -> Path:
    """A device config whose store exists; ``sync`` is the [sync] table (strings quoted, numbers as they are)."""
    store = tmp_path / "store"
    make_store(store)
    table = "\n".join(f"{k} = {json.dumps(v)}" for k, v in sync.items())
    path = tmp_path / "device.toml"
    path.write_text(f'[device]\nid = "{DEVICE}"\nofficer = "o-1"\nstore = "{store}"\nkey = "{tmp_path / "k"}"\n'
                    f"[sync]\n{table}\n")
    return path


def tls_files(tmp_path: Path) -> dict[str, object]:
    ca_cert, ca_key = create_ca("test CA")
    (tmp_path / "ca.crt").write_bytes(ca_cert)
    write_pem_files(tmp_path, "dev", *issue_certificate(ca_cert, ca_key, DEVICE, server=False))
    station = write_pem(tmp_path / "station.pub", DeviceKey.generate())
    return {"broker_host": "127.0.0.1", "ca": str(tmp_path / "ca.crt"), "cert": str(tmp_path / "dev.crt"),
            "key": str(tmp_path / "dev.key"), "station_key": str(station)}


def run_sync(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = sync_cli.sync_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [[], ["--once"], ["--config"], ["--config", "c", "--timeout", "soon"],
                                  ["--config", "c", "--once", "--timeout", "0"]])
def test_sync_wrong_arguments_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        sync_cli.sync_main(argv)
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).startswith("bodycam-sync: ")


def test_sync_timeout_needs_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_sync(capsys, "--config", str(tmp_path / "c.toml"), "--timeout", "5")
    assert (code, out) == (2, "")
    assert one_line(err) == "bodycam-sync: --timeout applies to --once only (see --help)"


def test_sync_unusable_configs_exit_2_naming_the_key(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_sync(capsys, "--config", str(tmp_path / "none.toml"), "--once")
    assert (code, out) == (2, "") and one_line(err).startswith("bodycam-sync: ")
    assert "none.toml" in err
    no_broker = sync_config(tmp_path / "a", {})
    code, _, err = run_sync(capsys, "--config", str(no_broker), "--once")
    assert code == 2 and "key 'sync.broker_host': not set" in one_line(err)
    files = tls_files(tmp_path)
    missing_cert = sync_config(tmp_path / "b", {**files, "cert": str(tmp_path / "absent.crt")})
    code, _, err = run_sync(capsys, "--config", str(missing_cert))
    assert code == 2 and "key 'sync.cert'" in one_line(err) and "absent.crt" in err
    bad_station_key = tmp_path / "station.bad"
    bad_station_key.write_text("not a key")
    garbage_key = sync_config(tmp_path / "c", {**files, "station_key": str(bad_station_key)})
    code, _, err = run_sync(capsys, "--config", str(garbage_key))
    assert code == 2 and "key 'sync.station_key'" in one_line(err)
    not_a_ca = sync_config(tmp_path / "d", {**files, "ca": str(bad_station_key)})
    code, _, err = run_sync(capsys, "--config", str(not_a_ca))
    assert code == 2 and "key 'sync.ca': not a usable PEM certificate" in one_line(err)
    other_key = sync_config(tmp_path / "e", {**files, "key": str(write_pem_files(tmp_path / "other", "x", *create_ca(
        "other"))[1])})
    code, _, err = run_sync(capsys, "--config", str(other_key))
    assert code == 2 and "key 'sync.cert' / 'sync.key'" in one_line(err)


def test_sync_once_without_a_broker_exits_1_in_a_real_process(tmp_path: Path) -> None:
    # Nothing listens on the port: every pass fails to connect, and --once gives up at its timeout.
    config = sync_config(tmp_path, {**tls_files(tmp_path), "broker_port": 1, "retry_seconds": 0.2})
    result = run_script("bodycam-sync", "--config", config, "--once", "--timeout", "1")
    assert (result.returncode, result.stdout) == (1, b"")
    assert b"not everything is acknowledged" in result.stderr


def test_sync_bad_arguments_in_a_real_process() -> None:
    result = run_script("bodycam-sync", "--anything")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"bodycam-sync: ")


# --- bodycam-station (tests/station/test_station_cli.py has the commands themselves) ----------------


def test_station_wrong_arguments_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as caught:
        sync_cli.station_main([])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err).startswith("bodycam-station: ")
    assert sync_cli.station_main(["status", "--config", str(tmp_path / "none.toml")]) == 2
    out, err = capsys.readouterr()
    assert out == "" and one_line(err) == f"bodycam-station: {tmp_path / 'none.toml'}: no such file"
    result = run_script("bodycam-station", "--anything")
    assert (result.returncode, result.stdout) == (2, b"")
    assert result.stderr.count(b"\n") == 1 and result.stderr.startswith(b"bodycam-station: ")
