"""The local control socket: the buttons' operations for a companion app (``bodycam-agent ctl ...``).

A Unix stream socket, mode 0660, owned by root and the ``bodycam`` group: only root and that group can
connect. One request per connection, one JSON object per line each way:

    -> {"op": "stop", "reason": "officer safety: crowd gathering"}
    <- {"ok": true, "error": null, "status": {...}}

Ops: status, open-case [procedure], stage [skip], record, stop [reason], bookmark [note],
retention reason, close-case [reason] (required while a required stage is not done). Every op goes through
the same state machine as the buttons; a refused op answers ``ok: false`` with the reason and changes nothing.

Custody ops, for the uploader (sync/uploader/custody_port.py, ``AgentCustody``): ``receipt`` ack (the station's
acknowledgement line, payload TAB signature) records a checked receipt; ``purge`` removes the acknowledged
segments the retention policy lets go. They answer ``{"ok", "error", "error_type", "status": null, "result"}``.
Requests are at most 4 KiB, a ``receipt`` request at most 64 KiB (an ack line is up to 16 KiB).

Clients are served concurrently, each connection on its own thread, at most ``MAX_CLIENTS`` at once (one more
is answered ``ok: false``, busy, at once): a long ``purge`` does not hold up ``status``. The handlers serialise
what must not interleave themselves (the device's lock, the custody lock).

Officer assignment (agent/evidence/assignment.py): ``assign`` with ``assignment`` (a station's signed line, from
the uploader) or ``officer`` (at the dock, ``bodycam-agent ctl assign --officer O``) records an
``officer-assigned`` event; it answers like the custody ops, with the outcome in ``result``. Refused
(``RefusedError``) while a case is open.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from agent.errors import (
    BodycamError,
    ConfigError,
    KeyFileError,
    LedgerBusyError,
    LedgerError,
    ProtocolError,
    RecordFormatError,
    RefusedError,
    StoreError,
    VerificationError,
)
from agent.evidence.fsutil import display_path
from agent.workflow.events import (
    AdvanceStage,
    Bookmark,
    CloseCase,
    Command,
    FlagRetention,
    OpenCase,
    StartRecording,
    StopRecording,
)

log = logging.getLogger(__name__)
MAX_REQUEST_BYTES = 4096
# A receipt carries an ack line of up to 16 KiB (agent.evidence.ack.MAX_ACK_BYTES); JSON escaping its quotes
# and the framing stay well inside this.
MAX_CUSTODY_REQUEST_BYTES = 64 * 1024
MAX_REPLY_BYTES = 4 * 1024 * 1024  # a purge reply lists every file removed
# Connections served at once: a purge, receipts, a companion app and a technician's ctl, with room to spare.
MAX_CLIENTS = 8
CLOSE_WAIT_S = 5.0  # how long close() waits for the requests in progress
CUSTODY_OPS = ("receipt", "purge")
ASSIGN_OP = "assign"
OPS = ("status", "open-case", "stage", "record", "stop", "bookmark", "retention", "close-case", *CUSTODY_OPS,
       ASSIGN_OP)
# handle(op, fields) -> result; a BodycamError it raises is the refusal (ok: false, its message and type name).
CustodyHandler = Callable[[str, Mapping[str, Any]], dict[str, Any]]
# handle(fields) -> result, for ``assign``; refusals as for the custody ops.
AssignHandler = Callable[[Mapping[str, Any]], dict[str, Any]]


class ControlError(BodycamError):
    """A control request is malformed, or the socket cannot be reached."""


def custody_request(request: object) -> tuple[str, dict[str, Any]] | None:
    """(op, fields) for a custody op; None for any other op. ControlError says what is wrong."""
    if not isinstance(request, dict) or request.get("op") not in CUSTODY_OPS:
        return None
    op = str(request["op"])
    allowed = {"op", "ack"} if op == "receipt" else {"op"}
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise ControlError(f"request: unknown field {unknown[0]!r} for op {op!r}")
    if op == "receipt" and not (isinstance(request.get("ack"), str) and request["ack"]):
        raise ControlError("request field 'ack': the station's acknowledgement line is required (a string)")
    return op, {k: v for k, v in request.items() if k != "op"}


def assign_request(request: object) -> dict[str, Any] | None:
    """The fields of an ``assign`` request (exactly one of ``assignment`` and ``officer``, a string); None for
    any other op. ControlError says what is wrong."""
    if not isinstance(request, dict) or request.get("op") != ASSIGN_OP:
        return None
    unknown = sorted(set(request) - {"op", "assignment", "officer"})
    if unknown:
        raise ControlError(f"request: unknown field {unknown[0]!r} for op {ASSIGN_OP!r}")
    given = [name for name in ("assignment", "officer") if name in request]
    if len(given) != 1 or not isinstance(request[given[0]], str) or not request[given[0]]:
        raise ControlError("request: op 'assign' takes exactly one of 'assignment' (the station's signed line) "
                           "and 'officer' (an officer id), a non-empty string")
    return {given[0]: request[given[0]]}


def command_from_request(request: object) -> Command | None:
    """The workflow command a request asks for (None for status); ControlError says what is wrong."""
    if not isinstance(request, dict):
        raise ControlError("request: must be a JSON object")
    op = request.get("op")
    allowed = {"op", "procedure", "skip", "reason", "note"}
    unknown = sorted(set(request) - allowed)
    if unknown:
        raise ControlError(f"request: unknown field {unknown[0]!r}")
    text = {k: request[k] for k in ("procedure", "reason", "note") if k in request}
    for key, value in text.items():
        if value is not None and not isinstance(value, str):
            raise ControlError(f"request field {key!r}: must be a string")
    if "skip" in request and not isinstance(request["skip"], bool):
        raise ControlError("request field 'skip': must be true or false")
    builders: dict[str, Callable[[], Command | None]] = {
        "status": lambda: None,
        "open-case": lambda: OpenCase(text.get("procedure")),
        "stage": lambda: AdvanceStage(skip=bool(request.get("skip", False))),
        "record": StartRecording,
        "stop": lambda: StopRecording(text.get("reason")),
        "bookmark": lambda: Bookmark(text.get("note")),
        "retention": lambda: FlagRetention(text.get("reason") or ""),
        "close-case": lambda: CloseCase(text.get("reason")),
    }
    if op not in builders:
        raise ControlError(f"request field 'op': {op!r} is not one of {', '.join(OPS)}")
    return builders[str(op)]()


class ControlServer:
    """Serves requests on ``path`` with ``handle(command) -> (error, status)`` and ``status() -> dict``;
    the custody ops with ``custody`` (refused when there is none)."""

    def __init__(
        self,
        *,
        path: Path,
        group: str,
        handle: Callable[[Command], tuple[str | None, dict[str, Any]]],
        status: Callable[[], dict[str, Any]],
        custody: CustodyHandler | None = None,
        assign: AssignHandler | None = None,
    ) -> None:
        self.path = path
        self.group = group
        self._handle = handle
        self._status = status
        self._custody = custody
        self._assign = assign
        self._socket: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        self._clients: set[threading.Thread] = set()
        self._clients_lock = threading.Lock()

    def start(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a socket left by a previous run
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(str(self.path))
            self._restrict()
            server.listen(8)
        except OSError as exc:
            raise ControlError(f"control socket {display_path(self.path)}: cannot listen ({exc.strerror})") from None
        self._socket = server
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()

    def _restrict(self) -> None:
        os.chmod(self.path, 0o660)
        try:
            gid = grp.getgrnam(self.group).gr_gid
        except KeyError:
            os.chmod(self.path, 0o600)  # no such group: root (the owner) only
            log.warning("group %r does not exist: control socket %s is owner-only", self.group, self.path)
            return
        if os.geteuid() == 0:
            os.chown(self.path, 0, gid)

    def close(self) -> None:
        if self._socket is not None:
            # close() alone does not wake a thread blocked in accept() on Linux; shutdown() does (EINVAL).
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            self._socket.close()
            self._socket = None
        deadline = time.monotonic() + CLOSE_WAIT_S
        if self._thread is not None:
            self._thread.join(timeout=CLOSE_WAIT_S)
        with self._clients_lock:
            clients = list(self._clients)
        for client in clients:
            client.join(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _serve(self) -> None:
        server = self._socket
        while server is not None and self._socket is not None:
            try:
                connection, _ = server.accept()
            except OSError:
                return  # closed
            if not self._slots.acquire(blocking=False):
                with connection:
                    self._busy(connection)
                continue
            client = threading.Thread(target=self._serve_client, args=(connection,), name="control-client",
                                      daemon=True)
            with self._clients_lock:
                self._clients.add(client)
            client.start()

    def _serve_client(self, connection: socket.socket) -> None:
        try:
            with connection:
                connection.settimeout(5)
                self._answer(connection)
        finally:
            with self._clients_lock:
                self._clients.discard(threading.current_thread())
            self._slots.release()

    @staticmethod
    def _busy(connection: socket.socket) -> None:
        log.warning("control socket: %d requests in progress, one more refused", MAX_CLIENTS)
        reply = {"ok": False, "error": f"control socket busy: {MAX_CLIENTS} requests in progress, try again",
                 "status": None}
        with contextlib.suppress(OSError):  # the client went away
            connection.settimeout(1)
            connection.sendall(json.dumps(reply).encode() + b"\n")

    def _answer(self, connection: socket.socket) -> None:
        try:
            data = _read_line(connection, MAX_CUSTODY_REQUEST_BYTES)
            request = json.loads(data)
            custody = custody_request(request)
            assign = assign_request(request)
            if custody is not None or assign is not None:
                answer = self._answer_custody(*custody) if custody is not None else self._answer_assign(assign or {})
                with contextlib.suppress(OSError):  # the client went away: the op was done all the same
                    connection.sendall(json.dumps(answer).encode() + b"\n")
                return
            if len(data) > MAX_REQUEST_BYTES:
                raise ControlError(f"request: longer than {MAX_REQUEST_BYTES} bytes")
            command = command_from_request(request)
            if command is None:
                reply: dict[str, Any] = {"ok": True, "error": None, "status": self._status()}
            else:
                error, state = self._handle(command)
                reply = {"ok": error is None, "error": error, "status": state}
        except (ControlError, ValueError, UnicodeDecodeError) as exc:
            reply = {"ok": False, "error": str(exc), "status": None}
        except OSError:
            return  # the client went away
        with contextlib.suppress(OSError):
            connection.sendall(json.dumps(reply).encode() + b"\n")

    def _answer_custody(self, op: str, fields: dict[str, Any]) -> dict[str, Any]:
        if self._custody is None:
            return _refusal(op, ControlError(f"op {op!r}: custody is not served on this socket"))
        custody = self._custody
        return _answer_op(op, lambda: custody(op, fields))

    def _answer_assign(self, fields: dict[str, Any]) -> dict[str, Any]:
        if self._assign is None:
            return _refusal(ASSIGN_OP, ControlError(f"op {ASSIGN_OP!r}: not served on this socket"))
        assign = self._assign
        return _answer_op(ASSIGN_OP, lambda: assign(fields))


def _answer_op(op: str, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        result = run()
    except BodycamError as exc:
        return _refusal(op, exc)
    return {"ok": True, "error": None, "error_type": None, "status": None, "result": result}


def _refusal(op: str, error: BodycamError) -> dict[str, Any]:
    log.warning("control op %s refused: %s", op, error)
    return {"ok": False, "error": str(error), "error_type": type(error).__name__, "status": None, "result": None}


def _read_line(connection: socket.socket, limit: int, what: str = "request") -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > limit:
            raise ControlError(f"{what}: longer than {limit} bytes")
    return data


# A refusal comes back as the daemon's own error type, so a client tells "refused" (a bad ack, a case open)
# from "agent not there" (ControlError); any other type name is a ControlError.
_REMOTE_ERRORS: dict[str, type[BodycamError]] = {
    cls.__name__: cls
    for cls in (VerificationError, RecordFormatError, RefusedError, LedgerError, LedgerBusyError, StoreError,
                KeyFileError, ConfigError, ProtocolError)
}


def call_op(path: Path, request: dict[str, Any], what: str, timeout: float = 10.0) -> dict[str, Any]:
    """``send_request`` for an op that must succeed: its result, or the daemon's refusal raised as its own type."""
    reply = send_request(path, request, timeout=timeout)
    if reply.get("ok") is not True:
        error = _REMOTE_ERRORS.get(str(reply.get("error_type")), ControlError)
        raise error(f"agent ({display_path(path)}) refused {what}: {reply.get('error')}")
    result = reply.get("result")
    if not isinstance(result, dict):
        raise ControlError(f"control socket {display_path(path)}: a reply without a result")
    return result


def send_request(path: Path, request: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """The client side: send one request, return the reply; ControlError when the daemon cannot be reached."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(timeout)
            client.connect(str(path))
            client.sendall(json.dumps(request).encode() + b"\n")
            reply = _read_line(client, MAX_REPLY_BYTES, f"control socket {display_path(path)}: reply")
    except OSError as exc:
        raise ControlError(f"control socket {display_path(path)}: {exc.strerror or exc}") from None
    try:
        parsed: dict[str, Any] = json.loads(reply)
    except ValueError:
        raise ControlError(f"control socket {display_path(path)}: the daemon sent no valid reply") from None
    return parsed
