"""Recording benchmark: frames in vs frames written, the recorder's CPU, peak RSS and stop latency.

    .venv/bin/python benchmarks/bench_recording.py [--seconds 300] [--width 1920 --height 1080 --fps 30]
        [--bitrate 8000000] [--prebuffer 30] [--armed-seconds 35] [--segment-seconds 10]
        [--fallback 1280x720|none] [--child-env NAME=VALUE] [--dir DIR] [--json] [--keep] [--check]

Each configuration runs in a child process of its own (so its peak RSS is its own) with the synthetic camera
in real time (paced to the frame rate on CLOCK_MONOTONIC, like a sensor, and really encoded with libx264):
arm for --armed-seconds so the pre-event buffer is full, press record, record --seconds, press stop (timed
to the last segment signed), close. The store is then verified with verify_store and every frame in every
segment file is decoded with PyAV. Reported:

* frames captured by the camera, frames into the segmenter, frames written, frames lost; frames the
  pre-event buffer let go before the press are not footage that was recording and are counted apart
  ("pre-buffer frames aged out"), as are the frames between the stop press and the camera stopping;
* the agent's own CPU per second of video, excluding the encoder: the segmenter thread's CPU time (its
  thread CPU clock) plus the cost of every ``outputframe`` call on the encoder's thread (measured by
  wrapping it), as % of one core; the whole process's CPU is shown for context -- it includes libx264 and
  drawing the test picture, which on the Pi are the hardware encoder's and the sensor's work;
* peak RSS (VmHWM from arming to exit, and the whole child's ru_maxrss including building the test
  picture); stop press -> last segment signed; the segmenter's backlog.

Targets (from the issue): 0 frames lost; agent CPU under 5% of one core per second of video; peak RSS under
150 MB with the 30 s buffer at 8 Mbit/s; stop press -> last segment signed under 1 s. When the synthetic
camera cannot make --fps frames a second at the chosen size on this machine (it misses pacing slots), the
output says so and the --fallback size is run as well, so the recorder's figures are not confused with the
software encoder's shortfall. Not part of the test suite. Exit status: 0 when the runs completed (2 when a
store did not verify or its files did not hold the frames written); with --check also 1 when a target was
missed.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import gc
import json
import logging
import os
import platform
import resource
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import filesystem_of, run_in_workdir, verdict  # noqa: E402

LOST_TARGET = 0
AGENT_CPU_TARGET_PCT = 5.0  # % of one core per second of video
RSS_TARGET_MB = 150.0
STOP_TARGET_MS = 1000.0
MB = 1024 * 1024  # RSS in MiB, as ps and top show it
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})
PROGRESS_EVERY_S = 60.0


# --------------------------------------------------------------------------------------------------
# Measurements that work in any process
# --------------------------------------------------------------------------------------------------


def proc_status_kib(*fields: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (VmRSS, VmHWM, ...); empty where there is no /proc."""
    found: dict[str, int] = {}
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as status:
            for line in status:
                name, _, value = line.partition(":")
                if name in fields:
                    found[name] = int(value.split()[0])
    except OSError:
        pass
    return found


def memory_sample() -> dict[str, int]:
    """RSS now (total, anonymous i.e. the process's own heap, file-backed i.e. shared libraries) and peak, KiB."""
    return proc_status_kib("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem")


def machine_busy_s() -> float | None:
    """CPU seconds all processes have used since boot (from /proc/stat), None where there is no /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs); False when not possible."""
    before = proc_status_kib("VmHWM", "VmRSS")
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
    except OSError:
        return False
    after = proc_status_kib("VmHWM", "VmRSS")
    return bool(after) and after["VmHWM"] <= max(before.get("VmRSS", 0), after["VmRSS"]) + 1024


def process_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def thread_cpu_s(thread: threading.Thread | None) -> float | None:
    """CPU seconds of a live Python thread (its CLOCK_THREAD_CPUTIME_ID), None if unavailable."""
    if thread is None or thread.ident is None or not thread.is_alive():
        return None
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (AttributeError, OSError):
        return None


def task_cpu_s() -> dict[int, float]:
    """CPU seconds (utime + stime) of every thread of this process, Python's or native, by thread id."""
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return result
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as stat:
                text = stat.read()
        except OSError:
            continue  # the thread ended meanwhile
        fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 (state): utime is 14, stime 15
        result[int(tid)] = (int(fields[11]) + int(fields[12])) / ticks
    return result


def find_thread(prefix: str) -> threading.Thread | None:
    return next((t for t in threading.enumerate() if t.name.startswith(prefix)), None)


# --------------------------------------------------------------------------------------------------
# The child: one recording run
# --------------------------------------------------------------------------------------------------


class OutputProbe:
    """Wraps a segmenter's ``outputframe`` and its record commands to count and time them by phase.

    One lock orders frames against the start and stop commands exactly as the segmenter's queue does, so
    the frames that arrived before the press, while recording and after the stop press are known exactly.
    The CPU cost of ``outputframe`` is the calling (encoder) thread's CPU clock around the real call.
    """

    PHASES = ("armed", "recording", "stopped")

    def __init__(self, segmenter: Any, fps: int, prebuffer_seconds: float) -> None:
        self._lock = threading.Lock()
        self.phase = "armed"
        self.frames = dict.fromkeys(self.PHASES, 0)
        self.bytes = dict.fromkeys(self.PHASES, 0)
        self.cpu_ns = dict.fromkeys(self.PHASES, 0)
        self.max_wall_ns = 0
        # (timestamp, size) of the latest armed frames, enough to size the pre-event buffer at the press.
        self.recent: collections.deque[tuple[int, int]] = collections.deque(
            maxlen=int(fps * (prebuffer_seconds + 10)) + 10
        )
        self._outputframe = segmenter.outputframe
        self._start = segmenter.start_recording
        self._stop = segmenter.stop_recording
        segmenter.outputframe = self.outputframe
        segmenter.start_recording = self.start_recording
        segmenter.stop_recording = self.stop_recording

    def outputframe(
        self, frame: Any, keyframe: bool = True, timestamp: int | None = None, packet: Any = None, audio: bool = False
    ) -> None:
        with self._lock:
            wall0 = time.perf_counter_ns()
            cpu0 = time.thread_time_ns()
            self._outputframe(frame, keyframe, timestamp, packet, audio)
            cpu = time.thread_time_ns() - cpu0
            wall = time.perf_counter_ns() - wall0
            if audio or frame is None:
                return
            phase = self.phase
            self.frames[phase] += 1
            self.cpu_ns[phase] += cpu
            self.bytes[phase] += len(frame)
            self.max_wall_ns = max(self.max_wall_ns, wall)
            if phase == "armed":
                self.recent.append((int(timestamp or 0), len(frame)))

    def start_recording(self, reason: str = "record button", fresh: bool = False) -> threading.Event:
        with self._lock:
            self.phase = "recording"
            return self._start(reason, fresh)

    def stop_recording(self, reason: str = "record button") -> threading.Event:
        with self._lock:
            self.phase = "stopped"
            return self._stop(reason)


class Snapshot:
    """CPU clocks at one moment: the process, the segmenter and capture threads, and every thread."""

    def __init__(self, worker: threading.Thread | None, capture: threading.Thread | None) -> None:
        self.wall = time.monotonic()
        self.process = process_cpu_s()
        self.worker = thread_cpu_s(worker)
        self.capture = thread_cpu_s(capture)
        self.tasks = task_cpu_s()


def _delta(later: float | None, earlier: float | None) -> float | None:
    return None if later is None or earlier is None else later - earlier


def thread_breakdown(start: Snapshot, end: Snapshot, names: dict[int, str]) -> dict[str, float]:
    """CPU seconds per kind of thread between two snapshots; what ended in between is 'unattributed'."""
    kinds: dict[str, float] = collections.defaultdict(float)
    for tid, seconds in end.tasks.items():
        kinds[names.get(tid, "native")] += seconds - start.tasks.get(tid, 0.0)
    kinds["unattributed"] = (end.process - start.process) - sum(kinds.values())
    return dict(kinds)


def sleep_until(deadline: float, label: str, report: Callable[[], str]) -> None:
    next_progress = time.monotonic() + PROGRESS_EVERY_S
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.5))
        if time.monotonic() >= next_progress and deadline - time.monotonic() > 5:
            next_progress += PROGRESS_EVERY_S
            print(f"  {label}: {report()}", file=sys.stderr, flush=True)


def child_main(config_path: Path) -> int:
    config = json.loads(config_path.read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="  child %(levelname)s %(name)s: %(message)s")
    rss: dict[str, dict[str, int]] = {"start": memory_sample()}

    from agent.camera.base import CameraSettings
    from agent.camera.synthetic import SyntheticCamera
    from agent.evidence.keys import DeviceKey
    from agent.evidence.ledger import Ledger
    from agent.recorder.session import RecordingSession
    from agent.simulate import segmenter_settings_for

    rss["after_agent_imports"] = memory_sample()
    fps = int(config["fps"])
    settings = CameraSettings(
        width=config["width"],
        height=config["height"],
        fps=fps,
        bitrate=config["bitrate"],
        keyframe_interval=fps,
        device_id="bench-rec-0001",
        officer_id="benchmark",
    )
    key = DeviceKey.from_seed(bytes.fromhex(config["key_seed"]))
    camera = SyntheticCamera(settings, realtime=True)
    # Build the test picture now (normally done when recording starts), so that building it -- the
    # synthetic source's one-off cost, nothing a Pi does -- is outside the measured part.
    prepare = getattr(camera, "_before_run", None)
    if callable(prepare):
        prepare()
    gc.collect()
    store = Path(config["store"])
    with Ledger.open(store, key, settings.device_id, boot_reason="benchmark") as ledger:
        session = RecordingSession(
            ledger=ledger, camera=camera, settings=segmenter_settings_for(settings, config["segment_seconds"],
                                                                          config["prebuffer"])
        )
        probe = OutputProbe(session.segmenter, fps, config["prebuffer"])
        rss["before_arm"] = memory_sample()
        peak_reset = reset_peak_rss()
        stats = session.stats

        def progress() -> str:
            return (
                f"{camera.frames_captured} frames captured, {getattr(camera, 'frames_dropped', 0)} pacing slots "
                f"missed, {stats.frames_written} written, backlog max {stats.backlog_max}, "
                f"RSS {proc_status_kib('VmRSS').get('VmRSS', 0) / 1024:.0f} MiB"
            )

        label = f"{settings.width}x{settings.height}@{fps}"
        stop_seconds: float | None = None
        stop_completed = False
        try:
            print(f"  {label}: arming for {config['armed_seconds']:g} s", file=sys.stderr, flush=True)
            session.arm()
            worker = find_thread("segmenter")
            capture = find_thread(f"{getattr(camera, 'name', 'camera')}-capture")
            armed = Snapshot(worker, capture)
            if config["armed_seconds"] > 2:
                time.sleep(2)
                rss["armed_2s"] = memory_sample()
            sleep_until(armed.wall + config["armed_seconds"], "armed", progress)
            rss["buffer_full"] = memory_sample()
            pressed = Snapshot(worker, capture)
            started = session.start("benchmark: record press")
            started.wait(60)
            start_done_s = time.monotonic() - pressed.wall
            backlog_armed_and_drain = stats.backlog_max
            stats.backlog_max = 0  # from here on: the backlog while recording
            print(f"  {label}: recording for {config['seconds']:g} s", file=sys.stderr, flush=True)
            sleep_until(pressed.wall + config["seconds"], "recording", progress)
            backlog_recording = stats.backlog_max
            stats.backlog_max = 0  # from here on: the backlog while stopping and closing
            rss["before_stop"] = memory_sample()
            before_stop = Snapshot(worker, capture)
            stopped = session.stop("benchmark: stop press", timeout=30.0)
            stop_seconds, stop_completed = stopped.seconds, stopped.completed
            signed = Snapshot(worker, capture)
            names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        finally:
            close_began = time.monotonic()
            session.close()
            close_seconds = time.monotonic() - close_began
        rss["after_close"] = memory_sample()
        head_seq, _ = ledger.head

    # Threads by kind: ours by their Python thread, the rest are native (libx264's workers).
    kinds = {tid: f"python:{name}" for tid, name in names.items()}
    kinds[threading.main_thread().native_id or -1] = "main"
    for thread, kind in ((worker, "segmenter"), (capture, "capture")):
        if thread is not None and thread.native_id is not None:
            kinds[thread.native_id] = kind
    result = {
        "label": label,
        "width": settings.width,
        "height": settings.height,
        "fps": fps,
        "bitrate": settings.bitrate,
        "prebuffer_seconds": config["prebuffer"],
        "segment_seconds": config["segment_seconds"],
        "public_key": key.public_raw.hex(),
        "head_seq": head_seq,
        "camera": {
            "frames_captured": camera.frames_captured,
            "pacing_slots_missed": getattr(camera, "frames_dropped", None),
        },
        "stats": dataclasses.asdict(stats),
        "probe": {
            "frames": probe.frames,
            "bytes": probe.bytes,
            "cpu_s": {phase: ns / 1e9 for phase, ns in probe.cpu_ns.items()},
            "max_wall_ms": probe.max_wall_ns / 1e6,
            "armed_tail": list(probe.recent),
        },
        "wall": {
            "armed_s": pressed.wall - armed.wall,
            "recording_s": before_stop.wall - pressed.wall,
            "start_done_s": start_done_s,
            "stop_s": stop_seconds,
            "stop_completed": stop_completed,
            "close_s": close_seconds,
        },
        "cpu": {
            "worker_armed_s": _delta(pressed.worker, armed.worker),
            "worker_recording_s": _delta(signed.worker, pressed.worker),
            "capture_recording_s": _delta(signed.capture, pressed.capture),
            "process_armed_s": pressed.process - armed.process,
            "process_recording_s": signed.process - pressed.process,
            "process_total_s": process_cpu_s(),
            "threads_recording_s": thread_breakdown(
                pressed, signed, {tid: kinds.get(tid, "native") for tid in signed.tasks}
            ),
        },
        "backlog": {
            "armed_and_drain": backlog_armed_and_drain,
            "recording": backlog_recording,
            "stop_and_close": stats.backlog_max,
        },
        "rss_kib": rss,
        "peak_reset": peak_reset,
        "peak_since_arm_kib": proc_status_kib("VmHWM").get("VmHWM"),
    }
    Path(config["result"]).write_text(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------------
# The parent: run the children, check the stores, report
# --------------------------------------------------------------------------------------------------


def run_child(config: dict[str, Any], workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one configuration in a child process; returns its result and its rusage (ru_maxrss etc.)."""
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(config["child_env"])
    load_before = os.getloadavg()
    busy_before = machine_busy_s()
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path)],
        cwd=REPO,
        env=env,
        stdout=sys.stderr,  # the child's chatter must not mix with --json on stdout
    )
    try:
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    wall = time.monotonic() - began
    busy_after = machine_busy_s()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"the recording child for {config['width']}x{config['height']} exited "
                           f"with status {process.returncode}")
    result = json.loads(Path(config["result"]).read_text())
    cpu = usage.ru_utime + usage.ru_stime
    child = {
        "max_rss_kib": usage.ru_maxrss,  # KiB on Linux
        "cpu_s": cpu,
        "wall_s": wall,
        # What other processes used meanwhile: on a small machine they can starve the synthetic camera.
        "others_cpu_s": None if busy_before is None or busy_after is None else busy_after - busy_before - cpu,
        "load_average_before": list(load_before),
        "load_average_after": list(os.getloadavg()),
    }
    return result, child


def read_ledger(store: Path) -> dict[str, Any]:
    from agent.evidence.record import parse_line

    segments: list[dict[str, Any]] = []
    starts: list[dict[str, Any]] = []
    checkpoints = 0
    with open(store / "ledger.jsonl", "rb") as handle:
        for raw in handle:
            record = parse_line(raw.rstrip(b"\n")).record
            body = dict(record.body)
            if record.type == "segment":
                segments.append(body)
            elif record.type == "checkpoint":
                checkpoints += 1
            elif record.type == "event" and body.get("kind") == "recording-start":
                starts.append(body)
    return {"segments": segments, "starts": starts, "checkpoints": checkpoints}


def decode_count(path: Path) -> tuple[int, int, int]:
    """(packets, decoded frames, decode errors) of one segment file, read with PyAV."""
    import av

    packets = frames = errors = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            if packet.size:
                packets += 1
            try:
                frames += len(packet.decode())
            except av.FFmpegError:
                errors += 1
    return packets, frames, errors


def check_store(store: Path, public_key_hex: str) -> dict[str, Any]:
    from agent.evidence.keys import public_key_from_hex
    from agent.evidence.verify import verify_store

    began = time.monotonic()
    report = verify_store(store, public_key=public_key_from_hex(public_key_hex))
    verify_s = time.monotonic() - began
    ledger = read_ledger(store)
    began = time.monotonic()
    packets = frames = errors = size = 0
    mismatched: list[str] = []
    for segment in ledger["segments"]:
        path = store / segment["file"]
        seg_packets, seg_frames, seg_errors = decode_count(path)
        packets, frames, errors = packets + seg_packets, frames + seg_frames, errors + seg_errors
        size += path.stat().st_size
        if seg_frames != segment["frames"]:
            mismatched.append(f"{segment['file']}: record says {segment['frames']}, decoded {seg_frames}")
    return {
        "intact": report.intact,
        "problems": [str(p) for p in report.problems][:5],
        "records": report.records,
        "segments": len(ledger["segments"]),
        "segment_bytes": size,
        "checkpoints": ledger["checkpoints"],
        "frames_in_records": sum(s["frames"] for s in ledger["segments"]),
        "incomplete_segments": sum(1 for s in ledger["segments"] if "incomplete" in s),
        "recording_starts": ledger["starts"],
        "packets_in_files": packets,
        "frames_decoded": frames,
        "decode_errors": errors,
        "mismatched_segments": mismatched[:5],
        "verify_s": verify_s,
        "decode_s": time.monotonic() - began,
    }


def analyse(result: dict[str, Any], child: dict[str, Any], store_check: dict[str, Any]) -> dict[str, Any]:
    """Frame accounting, CPU per second of video, memory and latency figures, and the targets."""
    fps = result["fps"]
    stats, probe, cam, cpu = result["stats"], result["probe"], result["camera"], result["cpu"]
    frames = probe["frames"]
    starts = store_check["recording_starts"]
    prebuffer_frames = starts[0]["prebuffer_frames"] if starts else 0
    first_ts = starts[0]["prebuffer_first_ts_us"] if starts else -1
    prebuffer_bytes = sum(size for ts, size in probe["armed_tail"] if first_ts >= 0 and ts >= first_ts)
    aged_out = frames["armed"] - prebuffer_frames
    expected_written = prebuffer_frames + frames["recording"]
    written = stats["frames_written"]
    lost = expected_written - written  # negative: written twice
    consistent = {
        "captured == frames_in": cam["frames_captured"] == stats["frames_in"],
        "frames_in == armed + recording + after stop": stats["frames_in"] == sum(frames.values()),
        "frames_not_recording == armed + after stop": stats["frames_not_recording"]
        == frames["armed"] + frames["stopped"],
        "records' frames == written": store_check["frames_in_records"] == written,
        "decoded frames == written": store_check["frames_decoded"] == written,
        "packets in files == written": store_check["packets_in_files"] == written,
        "no decode errors": store_check["decode_errors"] == 0,
        "no incomplete segments": store_check["incomplete_segments"] == 0,
        "store verifies": store_check["intact"],
        "one recording start": len(starts) == 1,
    }
    video_s = written / fps
    wall = result["wall"]
    slots = cam["pacing_slots_missed"]
    captured = cam["frames_captured"]
    kept_up = slots == 0
    worker_s = cpu["worker_recording_s"]
    outputframe_s = probe["cpu_s"]["recording"]
    agent_s = None if worker_s is None else worker_s + outputframe_s
    agent_armed_s = None if cpu["worker_armed_s"] is None else cpu["worker_armed_s"] + probe["cpu_s"]["armed"]
    peak_since_arm = result["peak_since_arm_kib"] if result["peak_reset"] else None
    peak_mb = (peak_since_arm if peak_since_arm is not None else child["max_rss_kib"]) / 1024
    stop_ms = None if wall["stop_s"] is None else wall["stop_s"] * 1000

    def pct(seconds: float | None, per: float) -> float | None:
        return None if seconds is None or per <= 0 else 100.0 * seconds / per

    agent_pct = pct(agent_s, video_s)
    before_arm, armed_2s = result["rss_kib"].get("before_arm", {}), result["rss_kib"].get("armed_2s", {})
    growth_mb = (armed_2s["VmRSS"] - before_arm["VmRSS"]) / 1024 if "VmRSS" in armed_2s and before_arm else None
    figures = {
        "kept_up": kept_up,
        "pacing_slots_missed": slots,
        "slots_missed_pct": 100.0 * (slots or 0) / max(1, captured + (slots or 0)),
        "achieved_fps": captured / max(1e-9, wall["armed_s"] + wall["recording_s"] + (wall["stop_s"] or 0)),
        "prebuffer_frames": prebuffer_frames,
        "prebuffer_bytes": prebuffer_bytes,
        "aged_out": aged_out,
        "expected_written": expected_written,
        "lost": lost,
        "consistent": consistent,
        "video_s": video_s,
        "bitrate_mbit": store_check["segment_bytes"] * 8 / max(video_s, 1e-9) / 1e6,
        "agent_cpu_s": agent_s,
        "agent_cpu_pct": agent_pct,
        "worker_cpu_pct": pct(worker_s, video_s),
        "outputframe_cpu_pct": pct(outputframe_s, video_s),
        "outputframe_us_per_call": 1e6 * outputframe_s / max(1, frames["recording"]),
        "agent_armed_cpu_pct": pct(agent_armed_s, wall["armed_s"]),
        "process_cpu_pct": pct(cpu["process_recording_s"], video_s),
        "threads_cpu_pct": {k: pct(v, video_s) for k, v in cpu["threads_recording_s"].items()},
        "peak_rss_mb": peak_mb,
        "peak_rss_source": "VmHWM from arming to exit" if peak_since_arm is not None else "ru_maxrss (whole child)",
        "child_max_rss_mb": child["max_rss_kib"] / 1024,
        "stop_ms": stop_ms,
        "others_cpu_pct": pct(child["others_cpu_s"], child["wall_s"]),
        "arming_growth_mb": growth_mb,
        "peak_without_encoder_mb": None if growth_mb is None else peak_mb - growth_mb,
    }
    figures["targets"] = {
        "lost_pass": lost == LOST_TARGET and all(consistent.values()),
        "agent_cpu_pass": agent_pct is not None and agent_pct < AGENT_CPU_TARGET_PCT,
        "rss_pass": peak_mb < RSS_TARGET_MB,
        "stop_pass": stop_ms is not None and wall["stop_completed"] and stop_ms < STOP_TARGET_MS,
    }
    return figures


def run_configuration(args: argparse.Namespace, workdir: Path, width: int, height: int) -> dict[str, Any]:
    folder = workdir / f"{width}x{height}"
    folder.mkdir()
    config = {
        "store": str(folder / "store"),
        "result": str(folder / "result.json"),
        "width": width,
        "height": height,
        "fps": args.fps,
        "bitrate": args.bitrate,
        "prebuffer": args.prebuffer,
        "armed_seconds": args.armed_seconds,
        "seconds": args.seconds,
        "segment_seconds": args.segment_seconds,
        "key_seed": secrets.token_hex(32),
        "child_env": dict(args.child_env),
    }
    print(f"running {width}x{height}@{args.fps} in a child process ({args.armed_seconds:g} s armed + "
          f"{args.seconds:g} s recording)", file=sys.stderr, flush=True)
    result, child = run_child(config, folder)
    print(f"  {width}x{height}: verifying the store and decoding every segment", file=sys.stderr, flush=True)
    store_check = check_store(Path(config["store"]), result["public_key"])
    figures = analyse(result, child, store_check)
    del result["probe"]["armed_tail"]  # only needed to size the pre-event buffer
    return {"result": result, "child": child, "store": store_check, "figures": figures}


def parse_env(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def parse_size(text: str) -> tuple[int, int] | None:
    if text.lower() == "none":
        return None
    width, _, height = text.lower().partition("x")
    try:
        return int(width), int(height)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT or none") from None


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import av

    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    runs = [run_configuration(args, workdir, args.width, args.height)]
    fallback_reason = None
    if not runs[0]["figures"]["kept_up"]:
        first = runs[0]["figures"]
        fallback_reason = (
            f"the synthetic camera missed {first['pacing_slots_missed']} pacing slots "
            f"({first['slots_missed_pct']:.1f}%) at {args.width}x{args.height}@{args.fps}: drawing the test picture "
            f"and libx264 did not keep up in real time on this machine ({os.cpu_count()} CPUs; other processes "
            f"used {_num(first['others_cpu_pct'], '.0f')}% of one core meanwhile)"
        )
        if args.fallback is not None and args.fallback != (args.width, args.height):
            print(f"{fallback_reason}; running {args.fallback[0]}x{args.fallback[1]} as well", file=sys.stderr)
            runs.append(run_configuration(args, workdir, *args.fallback))
    fs = filesystem_of(workdir)
    return {
        "workdir": str(workdir),
        "filesystem": fs,
        "fsync_reaches_disk": fs["type"] not in MEMORY_FILESYSTEMS,
        "python": platform.python_version(),
        "pyav": av.__version__,
        "ffmpeg": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average_before": load_before,
        "seconds": args.seconds,
        "armed_seconds": args.armed_seconds,
        "fallback_reason": fallback_reason,
        "child_env": dict(args.child_env),
        "runs": runs,
    }


def rss_cell(sample: dict[str, int]) -> str:
    if "VmRSS" not in sample:
        return "n/a"
    anon = sample.get("RssAnon")
    return f"{sample['VmRSS'] / 1024:.1f}" + ("" if anon is None else f" ({anon / 1024:.1f})")


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def print_table(result: dict[str, Any]) -> None:
    runs = result["runs"]
    fs = result["filesystem"]
    print(f"bodycam recording benchmark: synthetic camera in real time (paced), libx264 ultrafast; Python "
          f"{result['python']}, PyAV {result['pyav']} (libavcodec {result['ffmpeg']}), {result['cpus']} CPUs "
          f"({result['machine']})")
    print(f"store: {result['workdir']} on {fs['type']} ({fs['source']} at {fs['mount']})"
          + ("" if result["fsync_reaches_disk"] else "  WARNING: memory file system, fsync reaches no disk"))
    if result["child_env"]:
        print("recording child's environment: " + " ".join(f"{k}={v}" for k, v in result["child_env"].items()))
    load = result["load_average_before"]
    if load:
        print(f"load average before the run: {', '.join(f'{v:.2f}' for v in load)}")
    print()
    width = 58
    col = 22

    def row(name: str, cells: Sequence[str]) -> None:
        print(f"{name:<{width}}" + "".join(f"{c:>{col}}" for c in cells))

    def section(name: str) -> None:
        print(name)

    row("configuration", [
        f"{r['result']['label']} {r['result']['bitrate'] / 1e6:g}Mb" for r in runs
    ])
    row("armed / recorded (wall s)", [
        f"{r['result']['wall']['armed_s']:.1f} / {r['result']['wall']['recording_s']:.1f}" for r in runs
    ])
    section("frames")
    row("  captured by the camera", [str(r["result"]["camera"]["frames_captured"]) for r in runs])
    row("  pacing slots missed by the synthetic source", [
        f"{r['figures']['pacing_slots_missed']} ({r['figures']['slots_missed_pct']:.2f}%)" for r in runs
    ])
    row("  camera kept up in real time", ["yes" if r["figures"]["kept_up"] else "NO" for r in runs])
    row("  other processes' CPU meanwhile (% of one core)", [_num(r["figures"]["others_cpu_pct"], ".0f") + "%"
                                                               for r in runs])
    row("  into the segmenter (frames_in)", [str(r["result"]["stats"]["frames_in"]) for r in runs])
    row("    armed, before the record press", [str(r["result"]["probe"]["frames"]["armed"]) for r in runs])
    row("      pre-buffer frames recorded", [str(r["figures"]["prebuffer_frames"]) for r in runs])
    row("      pre-buffer frames aged out (not recording)", [str(r["figures"]["aged_out"]) for r in runs])
    row("    while recording", [str(r["result"]["probe"]["frames"]["recording"]) for r in runs])
    row("    after the stop press (armed again, not recording)", [
        str(r["result"]["probe"]["frames"]["stopped"]) for r in runs
    ])
    row("  written to segments (frames_written)", [str(r["result"]["stats"]["frames_written"]) for r in runs])
    row("  LOST (pre-buffer + recording - written)", [str(r["figures"]["lost"]) for r in runs])
    row("  in the segment files, decoded with PyAV", [
        f"{r['store']['frames_decoded']} ({r['store']['decode_errors']} err)" for r in runs
    ])
    row("  accounting checks", [
        "all hold" if all(r["figures"]["consistent"].values()) else "BROKEN" for r in runs
    ])
    row("segments / checkpoints / ledger records", [
        f"{r['store']['segments']} / {r['store']['checkpoints']} / {r['store']['records']}" for r in runs
    ])
    row("store verifies (verify_store)", ["yes" if r["store"]["intact"] else "NO" for r in runs])
    row("video written (s) / bitrate (Mbit/s)", [
        f"{r['figures']['video_s']:.1f} / {r['figures']['bitrate_mbit']:.2f}" for r in runs
    ])
    section("CPU, % of one core per second of video written")
    row("  AGENT (segmenter thread + outputframe calls)", [
        _num(r["figures"]["agent_cpu_pct"], ".2f") + "%" for r in runs
    ])
    row("    segmenter thread (mux, hash, fsync, sign)", [
        _num(r["figures"]["worker_cpu_pct"], ".2f") + "%" for r in runs
    ])
    row("    outputframe on the encoder's thread", [
        f"{r['figures']['outputframe_cpu_pct']:.3f}% ({r['figures']['outputframe_us_per_call']:.1f}us)"
        for r in runs
    ])
    row("    outputframe longest call (wall ms)", [f"{r['result']['probe']['max_wall_ms']:.2f}" for r in runs])
    row("  agent while armed (buffering), % of wall time", [
        _num(r["figures"]["agent_armed_cpu_pct"], ".2f") + "%" for r in runs
    ])
    row("  whole process while recording (context)", [_num(r["figures"]["process_cpu_pct"], ".1f") + "%" for r in runs])
    for kind, name in (
        ("capture", "    capture thread (picture, overlay, x264 calls)"),
        ("native", "    native threads (libx264 workers)"),
        ("segmenter", "    segmenter thread (/proc, 10 ms ticks)"),
        ("main", "    benchmark's main thread (polling)"),
        ("unattributed", "    other / ended threads"),
    ):
        row(name, [_num(r["figures"]["threads_cpu_pct"].get(kind), ".1f") + "%" for r in runs])
    section("memory (MiB; in brackets the process's own heap, RssAnon, the rest is mostly shared libraries)")
    row("  peak RSS, arming to exit", [_num(r["figures"]["peak_rss_mb"], ".1f") for r in runs])
    row("  peak RSS, whole child incl. building the test picture", [
        f"{r['figures']['child_max_rss_mb']:.1f}" for r in runs
    ])
    for phase, name in (
        ("after_agent_imports", "  RSS after the imports: total (own heap)"),
        ("before_arm", "  RSS after setup, before arming"),
        ("armed_2s", "  RSS 2 s after arming (encoder running)"),
        ("buffer_full", "  RSS with the pre-event buffer full"),
        ("before_stop", "  RSS before the stop press"),
    ):
        row(name, [rss_cell(r["result"]["rss_kib"].get(phase, {})) for r in runs])
    row("  RSS growth in the first 2 s armed (mostly libx264)", [
        _num(r["figures"]["arming_growth_mb"], ".1f") for r in runs
    ])
    row("  peak RSS less that growth (rough: without libx264)", [
        _num(r["figures"]["peak_without_encoder_mb"], ".1f") for r in runs
    ])
    row("  pre-event buffer at the press (MB, frames)", [
        f"{r['figures']['prebuffer_bytes'] / 1e6:.1f}, {r['figures']['prebuffer_frames']}" for r in runs
    ])
    section("latency and backlog")
    row("  stop press -> last segment signed (ms)", [
        _num(r["figures"]["stop_ms"], ".1f") + ("" if r["result"]["wall"]["stop_completed"] else " TIMEOUT")
        for r in runs
    ])
    row("  record press -> pre-buffer written (ms)", [
        f"{r['result']['wall']['start_done_s'] * 1000:.0f}" for r in runs
    ])
    row("  close: camera stop + encoder flush (ms)", [f"{r['result']['wall']['close_s'] * 1000:.0f}" for r in runs])
    row("  backlog max: armed+drain / recording / stop+close", [
        "{armed_and_drain} / {recording} / {stop_and_close}".format(**r["result"]["backlog"]) for r in runs
    ])
    row("  backlog warnings", [str(r["result"]["stats"]["backlog_warnings"]) for r in runs])
    print()
    print("The agent's figure is what the recorder itself costs: on the Pi, drawing the picture and encoding are")
    print("the sensor's and the hardware encoder's work; here they are the capture and libx264 threads.")
    if result["fallback_reason"]:
        print(f"NOTE: {result['fallback_reason']}.")
        if len(runs) > 1 and runs[1]["figures"]["kept_up"]:
            print(f"      Its frame counts are still exact, but read the recorder's figures from the "
                  f"{runs[1]['result']['label']} run, which keeps up.")
        elif len(runs) > 1:
            fallback = runs[1]["figures"]
            print(f"WARNING: {runs[1]['result']['label']} did not keep up either ({fallback['pacing_slots_missed']} "
                  f"slots, {fallback['slots_missed_pct']:.1f}%; other processes used "
                  f"{_num(fallback['others_cpu_pct'], '.0f')}% of one core): the frame counts are exact, but the")
            print("         per-second figures are for fewer frames than a sensor delivers; rerun on an idle machine.")
    for r in runs:
        problems = [name for name, ok in r["figures"]["consistent"].items() if not ok]
        if problems:
            print(f"ACCOUNTING: {r['result']['label']}: these do not hold: {', '.join(problems)}")
        if r["store"]["problems"]:
            print(f"VERIFY: {r['result']['label']}: {'; '.join(r['store']['problems'])}")
        if r["store"]["mismatched_segments"]:
            print(f"DECODE: {r['result']['label']}: {'; '.join(r['store']['mismatched_segments'])}")
    print()
    for r in runs:
        f, t = r["figures"], r["figures"]["targets"]
        kept = "" if f["kept_up"] else "  (camera did not keep up)"
        print(f"targets, {r['result']['label']}{kept}:")
        print(f"  frames lost = {LOST_TARGET} (and the files hold every frame written): {f['lost']}  "
              f"{verdict(t['lost_pass'])}")
        print(f"  agent CPU < {AGENT_CPU_TARGET_PCT:g}% of one core per second of video: "
              f"{_num(f['agent_cpu_pct'], '.2f')}%  {verdict(t['agent_cpu_pass'])}")
        print(f"  peak RSS < {RSS_TARGET_MB:g} MiB ({f['peak_rss_source']}): {f['peak_rss_mb']:.1f} MiB  "
              f"{verdict(t['rss_pass'])}")
        print(f"  stop press -> last segment signed < {STOP_TARGET_MS:g} ms: {_num(f['stop_ms'], '.1f')} ms  "
              f"{verdict(t['stop_pass'])}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds to record (default 300)")
    parser.add_argument("--armed-seconds", type=float, default=35.0,
                        help="seconds armed before the record press, to fill the pre-event buffer (default 35)")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--bitrate", type=int, default=8_000_000, help="bits per second (default 8000000)")
    parser.add_argument("--prebuffer", type=float, default=30.0, help="pre-event buffer seconds (default 30)")
    parser.add_argument("--segment-seconds", type=float, default=10.0, help="segment length (default 10)")
    parser.add_argument("--fallback", type=parse_size, default=(1280, 720),
                        help="WIDTHxHEIGHT to run as well when the camera cannot keep up (default 1280x720; none)")
    parser.add_argument("--child-env", type=parse_env, action="append", default=[], metavar="NAME=VALUE",
                        help="set an environment variable for the recording child, e.g. a malloc tunable "
                             "(MALLOC_MMAP_THRESHOLD_=65536) the daemon's service would set; repeatable")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder to create the temporary store in (default: the system temp folder; "
                             "give a folder on a real disk if that is tmpfs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        if args.seconds <= 0 or args.armed_seconds < 0 or args.prebuffer < 0 or args.segment_seconds <= 0:
            parser.error("--seconds and --segment-seconds must be positive, --armed-seconds and --prebuffer not "
                         "negative")
        if args.dir is not None and not args.dir.is_dir():
            parser.error(f"--dir {args.dir}: not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args.child)
    result = run_in_workdir("bodycam-bench-rec-", args, run_benchmark, print_table)
    broken = any(not all(r["figures"]["consistent"].values()) for r in result["runs"])
    if broken:
        print("ERROR: a store did not verify, or its files do not hold the frames written", file=sys.stderr)
        return 2
    missed = any(not all(r["figures"]["targets"].values()) for r in result["runs"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
