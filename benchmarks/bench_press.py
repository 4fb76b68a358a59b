"""Button press benchmark: press to durable ledger record, and press to feedback, on gpiozero's mock pins.

    .venv/bin/python benchmarks/bench_press.py [--presses 1000] [--camera recording|armed] [--gap-ms 350]
        [--dir DIR] [--json] [--keep] [--check]

The real device code, as ``bodycam-agent run`` wires it: a ``ButtonPanel`` (the default wiring, 30 ms debounce,
800 ms hold) and a ``FeedbackDriver`` on a ``MockFactory``, the ``Device`` (workflow machine and its effects), a
real ``Ledger`` (sign, write, fdatasync) in a fresh store, and a ``RecordingSession`` on the synthetic camera in
real time at 320x192, 30 fps. With ``--camera recording`` (the default) a case is opened first with a long
``stage`` press, so the camera records throughout and the recorder's checkpoint and segment records share the
ledger with the presses, as in the field; ``--camera armed`` leaves it armed and idle (no case).

Then ``mark`` is pressed short --presses times: the pin is driven low, held 60 ms (past the debounce, far short
of the hold time), and driven high. A short press is recognised at its release, so each latency starts at that
edge (``drive_high()``):

* **durable**: until the ``bookmark`` record is in the ledger and fdatasync'd -- timed when ``Ledger.append``
  returns for it (the hook wraps the device's ledger; append returns only after fdatasync);
* **feedback**: until the first state change of the LED or buzzer pin (every mock pin records the
  CLOCK_MONOTONIC time of each change). While recording the LED is steady on, so the buzzer's first beep is
  usually the first change.

The next press starts --gap-ms after the release, when the feedback (ACK then BOOKMARK, 320 ms) has finished,
so each press meets idle feedback as an officer's would; 1,000 presses take about 7 minutes. Afterwards the
store must verify and hold one bookmark per press. Targets (issue 4): durable p99 under 50 ms including fsync;
feedback within 100 ms. Not part of the test suite. Exit status: 0 when the run completed (2 when the store
did not verify or a press went missing); with --check also 1 when a target was missed.
"""

from __future__ import annotations

import argparse
import os
import platform
import queue
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchlib import filesystem_of, latency_summary, run_in_workdir, verdict  # noqa: E402
from gpiozero.pins.mock import MockFactory, MockPin  # noqa: E402

from agent.camera.base import CameraSettings  # noqa: E402
from agent.camera.synthetic import SyntheticCamera  # noqa: E402
from agent.controls.buttons import ButtonPanel  # noqa: E402
from agent.controls.feedback import FeedbackDriver  # noqa: E402
from agent.device import Device  # noqa: E402
from agent.evidence.keys import DeviceKey  # noqa: E402
from agent.evidence.ledger import Ledger  # noqa: E402
from agent.evidence.record import SignedRecord  # noqa: E402
from agent.evidence.store import read_records  # noqa: E402
from agent.evidence.verify import verify_store  # noqa: E402
from agent.recorder.segmenter import RecorderState  # noqa: E402
from agent.recorder.session import RecordingSession  # noqa: E402
from agent.simulate import segmenter_settings_for  # noqa: E402
from agent.workflow.events import Button  # noqa: E402
from agent.workflow.state import WorkflowConfig  # noqa: E402
from firmware_config.controls import ControlsConfig, pin_label  # noqa: E402
from firmware_config.profiles import load_profiles  # noqa: E402

DURABLE_P99_TARGET_MS = 50.0
FEEDBACK_TARGET_MS = 100.0
DOWN_SECONDS = 0.06  # a short press: past the 30 ms debounce, far short of the 800 ms hold
DEVICE_ID, OFFICER = "bench-press", "B0001"
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs", "hugetlbfs"})


class TimedPin(MockPin):
    """A mock pin that remembers the CLOCK_MONOTONIC time (ns) of every state change."""

    def __init__(self, factory: Any, info: Any) -> None:
        self.changes: list[tuple[int, bool]] = []
        super().__init__(factory, info)

    def _change_state(self, value: bool) -> bool:
        changed = bool(super()._change_state(value))
        if changed:
            self.changes.append((time.monotonic_ns(), bool(value)))
        return changed


def first_change_after(pins: Sequence[TimedPin], since_ns: int) -> int | None:
    """The earliest change on any of ``pins`` at or after ``since_ns``."""
    found = [t for pin in pins for t, _ in list(pin.changes) if t >= since_ns]
    return min(found) if found else None


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def run_benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    store = workdir / "store"
    controls = ControlsConfig.default()
    factory = MockFactory(pin_class=TimedPin)
    pins = {button.name: factory.pin(button.pin) for button in controls.buttons}
    feedback_pins = [factory.pin(pin) for _, pin in controls.feedback.pins()]
    config = WorkflowConfig(procedures=load_profiles(), device_id=DEVICE_ID, officer_id=OFFICER, source="bench")
    settings = CameraSettings(
        width=320, height=192, fps=30, bitrate=1_000_000, keyframe_interval=30, device_id=DEVICE_ID,
        officer_id=OFFICER,
    )  # fmt: skip
    durable: queue.SimpleQueue[int] = queue.SimpleQueue()
    key = DeviceKey.generate()
    load_before = list(os.getloadavg()) if hasattr(os, "getloadavg") else None

    with Ledger.open(store, key, DEVICE_ID, boot_reason="bench press") as ledger:
        plain_append = ledger.append

        def timed_append(record_type: str, body: Any) -> SignedRecord:
            signed = plain_append(record_type, body)  # returns after the fdatasync
            if record_type == "event" and body.get("kind") == "bookmark":
                durable.put(time.monotonic_ns())
            return signed

        ledger.append = timed_append  # type: ignore[method-assign]
        camera = SyntheticCamera(settings, realtime=True)
        session = RecordingSession(ledger=ledger, camera=camera, settings=segmenter_settings_for(settings, 10.0, 0.0))
        feedback = FeedbackDriver(controls, pin_factory=factory)
        device = Device(ledger=ledger, session=session, config=config, show=feedback.show,
                        set_recording_indicator=feedback.set_recording)
        panel = ButtonPanel(config=controls, on_press=device.press, pin_factory=factory)
        durable_ns: list[int] = []
        feedback_ns: list[int] = []
        missing_feedback = 0
        lost = 0
        try:
            device.start()
            if args.camera == "recording":  # open a case: the inspection records throughout
                pins[Button.STAGE].drive_low()
                time.sleep(1.2)
                pins[Button.STAGE].drive_high()
                wait_until(lambda: session.state is RecorderState.RECORDING, 10, "the recorder to record")
                time.sleep(1.5)  # the case's feedback ends; checkpoints are flowing
            mark = pins[Button.MARK]
            started = time.monotonic()
            for _ in range(args.presses):
                mark.drive_low()
                time.sleep(DOWN_SECONDS)
                edge = time.monotonic_ns()
                mark.drive_high()
                try:
                    durable_ns.append(durable.get(timeout=5) - edge)
                except queue.Empty:
                    lost += 1
                time.sleep(args.gap_ms / 1000)
                first = first_change_after(feedback_pins, edge)
                if first is None:
                    missing_feedback += 1
                else:
                    feedback_ns.append(first - edge)
            press_seconds = time.monotonic() - started
        finally:
            panel.close()
            device.close()
            feedback.close()
        recorder_stats = session.stats

    report = verify_store(store, public_key=key.public_key)
    bookmarks = sum(
        1 for signed in read_records(store)
        if signed.record.type == "event" and signed.record.body.get("kind") == "bookmark"
    )  # fmt: skip
    durable_summary = latency_summary(durable_ns)
    feedback_summary = latency_summary(feedback_ns)
    fs = filesystem_of(store)
    return {
        "presses": args.presses,
        "camera": args.camera,
        "gap_ms": args.gap_ms,
        "press_down_ms": DOWN_SECONDS * 1000,
        "store": str(store),
        "filesystem": fs,
        "fsync_reaches_disk": fs["type"] not in MEMORY_FILESYSTEMS,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "seconds": press_seconds,
        "pins": {
            "mark": pin_label(controls.button(Button.MARK).pin),
            "feedback": [pin_label(pin) for _, pin in controls.feedback.pins()],
        },
        "durable": durable_summary,
        "feedback": feedback_summary,
        "lost_presses": lost,
        "presses_without_feedback": missing_feedback,
        "bookmarks_in_ledger": bookmarks,
        "recorder_frames_written": recorder_stats.frames_written,
        "ledger_records": report.records,
        "intact": report.intact,
        "problems": [str(p) for p in report.problems][:5],
        "targets": {
            "durable_p99_ms_max": DURABLE_P99_TARGET_MS,
            "feedback_ms_max": FEEDBACK_TARGET_MS,
            "durable_p99_pass": lost == 0 and durable_summary["p99_ms"] < DURABLE_P99_TARGET_MS,
            "feedback_p99_pass": missing_feedback == 0 and feedback_summary["p99_ms"] < FEEDBACK_TARGET_MS,
            "feedback_max_pass": missing_feedback == 0 and feedback_summary["max_ms"] < FEEDBACK_TARGET_MS,
        },
    }


def print_table(result: dict[str, Any]) -> None:
    fs = result["filesystem"]
    targets = result["targets"]
    camera = ("recording (case open, synthetic 320x192 @ 30 fps)" if result["camera"] == "recording"
              else "armed, idle (synthetic 320x192 @ 30 fps)")  # fmt: skip
    print(f"bodycam press benchmark: {result['presses']} short presses of mark ({result['pins']['mark']}) on "
          f"gpiozero MockFactory, Python {result['python']}, {result['cpus']} CPUs")
    print(f"camera: {camera}; press held {result['press_down_ms']:.0f} ms, next press {result['gap_ms']} ms "
          f"after release; run {result['seconds']:.0f} s")
    print(f"store: {result['store']}")
    print(f"file system: {fs['type']} on {fs['source']} (mounted at {fs['mount']})"
          + ("" if result["fsync_reaches_disk"] else "  WARNING: memory file system, fsync reaches no disk"))
    print(f"ledger: {result['ledger_records']} records, {result['bookmarks_in_ledger']} bookmarks, "
          f"{'INTACT' if result['intact'] else 'NOT INTACT'}; recorder wrote {result['recorder_frames_written']} "
          "frames meanwhile")
    print()
    print(f"{'release edge ->':<44}{'n':>6}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'mean ms':>9}")
    rows = (("bookmark record durable (append+fdatasync)", result["durable"]),
            (f"first LED/buzzer change ({', '.join(result['pins']['feedback'])})", result["feedback"]))  # fmt: skip
    for name, row in rows:
        print(f"{name:<44}{row['count']:>6}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}{row['max_ms']:>9.2f}"
              f"{row['mean_ms']:>9.2f}")
    if result["lost_presses"] or result["presses_without_feedback"]:
        print(f"presses with no bookmark record: {result['lost_presses']}; "
              f"with no feedback: {result['presses_without_feedback']}")
    print()
    note = "" if result["fsync_reaches_disk"] else " (memory file system: not a disk figure)"
    print(f"target: press -> durable record p99 < {DURABLE_P99_TARGET_MS:.0f} ms: "
          f"{result['durable']['p99_ms']:.2f} ms  {verdict(targets['durable_p99_pass'])}{note}")
    print(f"target: press -> feedback < {FEEDBACK_TARGET_MS:.0f} ms: p99 {result['feedback']['p99_ms']:.2f} ms  "
          f"{verdict(targets['feedback_p99_pass'])}; max {result['feedback']['max_ms']:.2f} ms  "
          f"{verdict(targets['feedback_max_pass'])}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--presses", type=int, default=1000, help="short mark presses (default 1000)")
    parser.add_argument("--camera", choices=("recording", "armed"), default="recording",
                        help="recording: a case open, the camera recording (default); armed: idle")
    parser.add_argument("--gap-ms", type=int, default=350,
                        help="from a release to the next press (default 350: the feedback has ended)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="folder to create the temporary store in (default: the system temp folder; "
                             "give a folder on a real disk if that is tmpfs)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and print where it is")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    if args.presses < 1 or args.gap_ms < 0:
        parser.error("--presses must be at least 1 and --gap-ms not negative")
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a folder")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("GPIOZERO_PIN_FACTORY", None)
    result = run_in_workdir("bodycam-bench-press-", args, run_benchmark, print_table)
    if not result["intact"] or result["lost_presses"] or result["bookmarks_in_ledger"] != args.presses:
        print("ERROR: the store did not verify or a press left no bookmark record", file=sys.stderr)
        return 2
    targets = result["targets"]
    missed = not (targets["durable_p99_pass"] and targets["feedback_p99_pass"])
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
