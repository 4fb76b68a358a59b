"""The device daemon in real processes: ``bodycam-agent run --config FILE`` driven by ``bodycam-agent ctl``.

The config is the shipped example (firmware_config/device.example.toml) with its paths moved into the test's
folders, the synthetic camera at a small size and gpiozero's mock pins. Every operation goes through the real
control socket; the store is then checked with ``bodycam-verify`` and its case timeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_for

from agent.control_socket import ControlError, send_request
from agent.evidence.store import read_records

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "firmware_config" / "device.example.toml"
DEVICE, OFFICER = "cam-0001", "A1234"
CASE = f"{DEVICE}-00001"
STAGES = ["arrival", "credentials-shown", "party-informed", "inspection", "record-signed", "departure"]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    for name in ("GPIOZERO_PIN_FACTORY", "BODYCAM_CAMERA"):
        env.pop(name, None)
    return env


def daemon_config(folder: Path, socket_path: Path) -> Path:
    """device.example.toml with tmp paths, the synthetic camera at 320x192 and mock pins; written to folder."""
    text = EXAMPLE.read_text(encoding="utf-8")
    replacements = {
        'store = "/var/lib/bodycam/store"': f'store = "{folder / "store"}"',
        'key = "/var/lib/bodycam/identity/device.key"': f'key = "{folder / "identity" / "device.key"}"',
        'backend = "picamera2"': 'backend = "synthetic"',
        "width = 1920": "width = 320",
        "height = 1080": "height = 192",
        "bitrate = 8000000": "bitrate = 400000",
        "low_space_mb = 512": "low_space_mb = 16",
        "floor_mb = 64": "floor_mb = 8",
        'pin_factory = "lgpio"': 'pin_factory = "mock"',
        'path = "/run/bodycam/control.sock"': f'path = "{socket_path}"',
        'report_path = "/run/bodycam/health.json"': f'report_path = "{folder / "health.json"}"',
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"device.example.toml changed: {old!r} not found exactly once"
        text = text.replace(old, new)
    path = folder / "device.toml"
    path.write_text(text, encoding="utf-8")
    return path


class Daemon:
    """One ``bodycam-agent run --config`` process and its control socket."""

    def __init__(self, config: Path, socket_path: Path, store: Path, workdir: Path) -> None:
        self.config = config
        self.socket = socket_path
        self.store = store
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        self.log = self.workdir / f"daemon-{self.runs}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN / "bodycam-agent"), "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=_env(),
            )  # fmt: skip
        wait_for(self._ready, 30, "the daemon's control socket")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"the daemon exited with {self.process.returncode}: {self.output()}")
        try:
            return bool(send_request(self.socket, {"op": "status"}, timeout=5)["ok"])
        except ControlError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ctl(self, *args: str) -> tuple[int, dict[str, Any], str]:
        """``bodycam-agent ctl --socket S ARGS``: (exit code, the reply, stderr)."""
        result = subprocess.run(
            [str(BIN / "bodycam-agent"), "ctl", "--socket", str(self.socket), *args],
            capture_output=True, text=True, env=_env(), timeout=60, check=False,
        )  # fmt: skip
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout), result.stderr

    def ok(self, *args: str) -> dict[str, Any]:
        code, reply, err = self.ctl(*args)
        assert code == 0 and reply["ok"] is True and reply["error"] is None, (args, reply, err)
        return dict(reply["status"])

    def status(self) -> dict[str, Any]:
        return dict(send_request(self.socket, {"op": "status"})["status"])

    def terminate(self) -> tuple[int, float]:
        """SIGTERM: (exit code, seconds until the process was gone)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        return code, time.monotonic() - started

    def kill(self) -> None:
        """SIGKILL: power loss, as far as the daemon can tell."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop_if_running(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture
def daemon(tmp_path: Path, short_folder: Path) -> Iterator[Daemon]:
    socket_path = short_folder / "control.sock"
    config = daemon_config(tmp_path, socket_path)
    running = Daemon(config, socket_path, tmp_path / "store", tmp_path)
    yield running
    running.stop_if_running()


def records(store: Path) -> list[tuple[int, str, dict[str, Any]]]:
    return [(s.record.seq, s.record.type, dict(s.record.body)) for s in read_records(store)]


def events(store: Path, kind: str) -> list[tuple[int, dict[str, Any]]]:
    return [(seq, body) for seq, rtype, body in records(store) if rtype == "event" and body.get("kind") == kind]


def verify(store: Path) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [str(BIN / "bodycam-verify"), str(store), "--device-store", "--timeline", "--json"],
        capture_output=True, text=True, env=_env(), timeout=60, check=False,
    )  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def raw_request(path: Path, data: bytes) -> dict[str, Any]:
    """Send raw bytes on the control socket (then end the request), return the parsed reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(15)
        client.connect(str(path))
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = client.recv(65536)
            if not chunk:
                break
            reply += chunk
    parsed: dict[str, Any] = json.loads(reply)
    return parsed


# --- a case from start to end over the control socket -------------------------------------------------------


def test_case_over_the_control_socket_then_sigterm(daemon: Daemon) -> None:
    daemon.start()
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode & 0o007 == 0, oct(mode)  # root and the bodycam group only, never everyone

    status = daemon.ok("status")
    assert (status["case"], status["recording"], status["cases_opened"]) == (None, False, 0)
    assert status["recorder"] == "armed"

    status = daemon.ok("open-case")
    assert status["case"]["case_id"] == CASE and status["case"]["next_stage"] == "arrival"
    assert status["recording"] is True  # the inspection is recorded throughout
    status = daemon.ok("stage")
    assert status["case"]["done"] == ["arrival"] and status["case"]["next_stage"] == "credentials-shown"
    wait_for(lambda: daemon.status()["recorder"] == "recording", 10, "the recorder to record")

    # The stop guard: no reason, no stop.
    code, reply, err = daemon.ctl("stop")
    assert code == 1 and reply["ok"] is False and err == "", reply
    assert "stop guard" in reply["error"] and CASE in reply["error"] and "reason" in reply["error"]
    assert reply["status"]["recording"] is True and reply["status"]["case"]["case_id"] == CASE
    refused = events(daemon.store, "stop-refused")
    assert [(body["case_id"], body["source"]) for _, body in refused] == [(CASE, "control")]

    reason = "officer safety: crowd gathering"
    status = daemon.ok("stop", "--reason", reason)
    assert status["recording"] is False and status["case"]["case_id"] == CASE  # the case stays open
    wait_for(lambda: events(daemon.store, "recording-stop"), 10, "the recorder's stop")
    time.sleep(2.0)  # an unrecorded interval the timeline must show (resuming starts fresh: none of it returns)
    status = daemon.ok("record")
    assert status["recording"] is True
    wait_for(lambda: daemon.status()["recorder"] == "recording", 10, "recording to resume")

    status = daemon.ok("bookmark", "--note", "knife on the counter")
    status = daemon.ok("retention", "--reason", "assault on the officer")
    assert status["case"]["retention"] == "long-term"
    status = daemon.ok("stage")
    assert status["case"]["done"] == ["arrival", "credentials-shown"]
    # Required stages are not done: closing needs a reason (the close guard), signed before the close.
    code, reply, _ = daemon.ctl("close-case")
    assert code == 1 and "needs a reason" in reply["error"] and reply["status"]["case"]["case_id"] == CASE
    status = daemon.ok("close-case", "--reason", "called to an emergency")
    assert status["case"] is None and status["cases_opened"] == 1
    status = daemon.ok("status")
    assert status["case"] is None and status["recording"] is True  # closing a case leaves the camera on

    code, seconds = daemon.terminate()
    output = daemon.output()
    assert code == 0, output
    assert seconds < 4.0, f"the daemon took {seconds:.1f} s to exit after SIGTERM"
    assert "Traceback" not in output, output
    assert not daemon.socket.exists()  # the socket is removed on the way out

    verified, report = verify(daemon.store)
    assert verified == 0 and report["intact"] is True, report["problems"]
    [case] = report["timeline"]
    assert case["case_id"] == CASE and case["officer"] == OFFICER and case["procedure"] == "inspection"
    assert case["closed"] is not None and case["closed_early"] is True
    assert [(s["name"], s["status"]) for s in case["stages"]] == [
        ("arrival", "done"), ("credentials-shown", "done"),
        *((name, "not reached") for name in STAGES[2:]),
    ]  # fmt: skip
    assert case["missing"] == STAGES[2:]
    assert len(case["stops_refused"]) == 2 and case["stops_refused"][1]["stops"] == "case"
    [stop, close] = case["stop_reasons"]
    assert (stop["code"], stop["reason"], stop["source"], stop["officer"]) == (0, reason, "control", OFFICER)
    assert (close["stops"], close["reason"]) == ("case", "called to an emergency")
    assert [b["note"] for b in case["bookmarks"]] == ["knife on the counter"]
    assert case["retention_class"] == "long-term"
    assert [f["reason"] for f in case["retention_flags"]] == ["assault on the officer"]
    unrecorded = [i for i in case["intervals"] if not i["recorded"]]
    assert [i["reason"] for i in unrecorded] == [f"stop reason (free text): {reason}"]
    assert unrecorded[0]["duration_us"] >= 1_900_000  # all of the 2 s pause: a resumption starts fresh
    # The open segment was closed and signed on SIGTERM: the ledger ends with the recorder's stop, which names
    # the cause (no case was open, so no stop-reason record: tests/test_daemon_system_stop.py has that).
    assert records(daemon.store)[-1][1:] == (
        "event", {"kind": "recording-stop", "reason": "system stop: service stopped (SIGTERM)"})


# --- bad requests change nothing ----------------------------------------------------------------------------

BAD_REQUESTS = [
    b"garbage\n",
    b"\xff\xfe\x00\n",
    b'{"op": "stage"\n',  # truncated JSON
    b"null\n",
    b'["stage"]\n',
    b'{"op": "explode"}\n',
    b'{"op": null}\n',
    b'{"stage": true}\n',
    b'{"op": "stage", "force": true}\n',  # a known op with an unknown field
    b'{"op": "stage", "skip": "yes"}\n',
    b'{"op": "retention", "reason": 19}\n',
    b'{"op": "retention", "reason": "   "}\n',
    b'{"op": "bookmark", "note": "two\\nlines"}\n',
    b'{"op": "open-case", "procedure": "raid"}\n',
    b'{"op": "open-case"}\n',  # a case is open already
    b'{"op": "stage", "note": "' + b"a" * 10_000 + b'"}\n',  # overlong
    b"",
]


def test_bad_requests_are_refused_and_append_nothing(daemon: Daemon) -> None:
    daemon.start()
    daemon.ok("open-case")
    daemon.ok("stop", "--reason", "legally restricted area: court building")
    wait_for(lambda: events(daemon.store, "recording-stop"), 10, "the recorder's stop")
    wait_for(lambda: daemon.status()["recorder"] == "armed", 10, "the recorder to be armed again")
    ledger = daemon.store / "ledger.jsonl"
    time.sleep(0.5)
    before = ledger.read_bytes()
    state_before = daemon.status()

    for request in BAD_REQUESTS:
        reply = raw_request(daemon.socket, request)
        assert reply["ok"] is False and isinstance(reply["error"], str) and reply["error"], (request[:60], reply)
    overlong = raw_request(daemon.socket, BAD_REQUESTS[-2])
    assert "longer than" in overlong["error"]
    unknown = raw_request(daemon.socket, b'{"op": "explode"}\n')
    assert "explode" in unknown["error"] and "open-case" in unknown["error"]  # says what is allowed

    assert daemon.process is not None and daemon.process.poll() is None  # still serving
    assert daemon.status() == state_before
    assert ledger.read_bytes() == before, "a refused request appended to the ledger"

    # The comparison can see a change: a good request appends.
    status = daemon.ok("stage", "--skip")
    assert status["case"]["skipped"] == ["arrival"]
    assert ledger.read_bytes() != before
    code, _ = daemon.terminate()
    assert code == 0, daemon.output()
    assert verify(daemon.store)[0] == 0


# --- power loss in the middle of a case ---------------------------------------------------------------------


def test_power_loss_mid_case_resumes_the_case(daemon: Daemon) -> None:
    daemon.start()
    daemon.ok("open-case")
    daemon.ok("stage")
    stage_seq = next(seq for seq, rtype, _ in records(daemon.store) if rtype == "stage")
    # Footage signed after the stage (a checkpoint of the open segment), then the power goes.
    wait_for(
        lambda: any(seq > stage_seq and rtype == "checkpoint" for seq, rtype, _ in records(daemon.store)),
        15, "a checkpoint after the stage",
    )  # fmt: skip
    daemon.kill()
    assert not any(rtype == "case-close" for _, rtype, _ in records(daemon.store))
    crashed, report = verify(daemon.store)
    assert crashed == 1 and any("left open" in str(p) for p in report["problems"]), report  # not yet recovered
    last_seq_before = records(daemon.store)[-1][0]

    daemon.start()  # the same config: the same store
    status = daemon.status()
    assert status["case"] is not None, status
    assert status["case"]["case_id"] == CASE and status["cases_opened"] == 1
    assert status["case"]["next_stage"] == "credentials-shown" and status["case"]["done"] == ["arrival"]
    assert status["recording"] is True  # the inspection is recorded throughout: the camera came back on
    wait_for(lambda: daemon.status()["recorder"] == "recording", 10, "recording to restart")

    after = [(seq, rtype, body) for seq, rtype, body in records(daemon.store) if seq > last_seq_before]
    kinds = [rtype if rtype != "event" else body["kind"] for _, rtype, body in after]
    assert kinds[:3] == ["boot", "recovered", "gap"], kinds
    assert after[0][2]["reason"] == "daemon start"
    assert after[1][2]["file"] == "segments/000001.ts"
    resumed = [body for _, rtype, body in after if rtype == "event" and body["kind"] == "case-resumed"]
    assert resumed == [
        {"kind": "case-resumed", "case_id": CASE, "next_stage": "credentials-shown", "index": 2, "officer": OFFICER}
    ]
    assert kinds.index("case-resumed") < kinds.index("recording-start")
    restart = next(body for _, rtype, body in after if rtype == "event" and body["kind"] == "recording-start")
    assert restart["reason"] == "resumed after restart"
    assert "case-open" not in kinds and "case-close" not in kinds  # neither a new case nor a silent close

    # The same case goes on where it was.
    status = daemon.ok("stage")
    assert status["case"]["case_id"] == CASE and status["case"]["done"] == ["arrival", "credentials-shown"]
    code, _ = daemon.terminate()
    assert code == 0, daemon.output()

    verified, report = verify(daemon.store)
    assert verified == 0 and report["intact"] is True, report["problems"]
    assert any("recovered" in str(note) for note in report["notes"]), report["notes"]
    [case] = report["timeline"]
    assert case["case_id"] == CASE and case["closed"] is None  # still open: never closed by the restart
    assert [n["next_stage"] for n in case["resumed"]] == ["credentials-shown"]
    assert [(s["name"], s["status"]) for s in case["stages"][:3]] == [
        ("arrival", "done"), ("credentials-shown", "done"), ("party-informed", "pending"),
    ]  # fmt: skip
    gaps = [i for i in case["intervals"] if not i["recorded"] and i["reason"].startswith("device restarted")]
    assert len(gaps) == 1 and gaps[0]["duration_us"] > 0, case["intervals"]
    assert case["problems"] == []


# --- ctl without a daemon -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_ctl_without_a_daemon(short_folder: Path, kind: str) -> None:
    path = short_folder / "control.sock"
    expected = "No such file or directory"
    if kind == "stale":  # a socket file left by a daemon that is gone
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as left:
            left.bind(str(path))
        expected = "Connection refused"
    result = subprocess.run(
        [str(BIN / "bodycam-agent"), "ctl", "--socket", str(path), "stage"],
        capture_output=True, text=True, env=_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr == f"bodycam-agent: control socket {path}: {expected}\n"
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
