"""The control socket serves its clients concurrently: a slow custody op (a purge after long offline) does not
hold up ``status``, and at most MAX_CLIENTS requests are served at once (one more is told the socket is busy)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from agent.control_socket import MAX_CLIENTS, ControlServer, send_request


class SlowCustody:
    """A custody handler whose ops wait until the test lets them go."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self._cond = threading.Condition()

    def __call__(self, op: str, _fields: Mapping[str, Any]) -> dict[str, Any]:
        with self._cond:
            self.running += 1
            self._cond.notify_all()
        assert self.release.wait(20), "the test never let the op go"
        return {"purged": [], "refused": []} if op == "purge" else {"outcome": "recorded"}

    def wait_running(self, count: int) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.running >= count, 10)


@pytest.fixture
def custody() -> SlowCustody:
    return SlowCustody()


@pytest.fixture
def server(short_folder: Path, custody: SlowCustody) -> Iterator[ControlServer]:
    served = ControlServer(path=short_folder / "c.sock", group="nogroup-bodycam-test",
                           handle=lambda _command: (None, {"recording": False}),
                           status=lambda: {"recording": False}, custody=custody)
    served.start()
    yield served
    custody.release.set()
    served.close()


def purge_in_background(server: ControlServer) -> tuple[threading.Thread, list[dict[str, Any]]]:
    replies: list[dict[str, Any]] = []
    thread = threading.Thread(target=lambda: replies.append(send_request(server.path, {"op": "purge"}, timeout=30)))
    thread.start()
    return thread, replies


def test_a_slow_purge_does_not_block_status(server: ControlServer, custody: SlowCustody) -> None:
    thread, replies = purge_in_background(server)
    assert custody.wait_running(1)
    # The purge is still running: status is answered all the same, at once.
    reply = send_request(server.path, {"op": "status"}, timeout=2)
    assert reply == {"ok": True, "error": None, "status": {"recording": False}}
    assert replies == [] and thread.is_alive()
    custody.release.set()
    thread.join(10)
    assert replies == [{"ok": True, "error": None, "error_type": None, "status": None,
                        "result": {"purged": [], "refused": []}}]


def test_one_client_more_than_the_bound_is_told_the_socket_is_busy(server: ControlServer,
                                                                   custody: SlowCustody) -> None:
    running = [purge_in_background(server) for _ in range(MAX_CLIENTS)]
    assert custody.wait_running(MAX_CLIENTS)
    reply = send_request(server.path, {"op": "status"}, timeout=2)
    assert reply["ok"] is False and f"busy: {MAX_CLIENTS} requests in progress" in reply["error"], reply
    custody.release.set()
    for thread, replies in running:
        thread.join(10)
        assert [r["ok"] for r in replies] == [True]
    # The slots are free again.
    assert send_request(server.path, {"op": "status"}, timeout=2)["ok"] is True
