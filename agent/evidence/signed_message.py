"""One way to sign, parse and verify a signed message outside the ledger, and to declare its fields.

The station's acknowledgement and officer assignment, the device's health report and the enrolment bundle
are each canonical JSON signed with Ed25519 under a domain of their own (so none can pass for another or for
a ledger record). A :class:`MessageFormat` declares one of them: its constant header (``v``/``type``), every
other field with the :data:`Check` that judges it, and rules across fields. The same declaration judges what
is signed and what is parsed, so a signer never writes a message its verifier refuses. Every refusal is a
RecordFormatError that starts with the message's name and names the field (``ack: field 'seq': -1 is not a
whole number in 0..9007199254740991``); a failed signature, key or device is a VerificationError.

Three of them travel as one line, ``payload TAB signature-hex`` (LF), like a ledger line (:meth:`parse`,
:meth:`sign`); the enrolment bundle carries its signature as a field and uses the checks and
:meth:`MessageFormat.signature`/:meth:`MessageFormat.check_signature` only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.errors import EncodingError, RecordFormatError, VerificationError
from agent.evidence.encoding import MAX_SAFE_INTEGER, canonical_json, is_hex64, is_integer, parse_canonical_json
from agent.evidence.keys import DeviceKey, fingerprint, public_key_raw, verify_signature
from agent.evidence.record import DEVICE_ID_PATTERN

_SIGNATURE_HEX = re.compile(rb"[0-9a-f]{128}\Z")

# A check judges one value at ``path`` ("seq", "files[0].size"): None when it is good, else the problem as
# it is reported after the message's name ("field 'seq': -1 is not ...").
Check = Callable[[Any, str], str | None]
# A rule judges the whole (already field-checked) message: None, or the problem.
Rule = Callable[[Mapping[str, Any]], str | None]


def where(path: str) -> str:
    """How a refusal names ``path``: ``field 'seq'`` for a top-level field, ``files[0].size`` inside one."""
    return path if "[" in path or "." in path else f"field {path!r}"


def shown(value: Any) -> str:
    """A value as a refusal quotes it: text quoted, everything cut to 80 characters."""
    return repr(value[:80]) if isinstance(value, str) else str(value)[:80]


def kind(expected: str, ok: Callable[[Any], bool]) -> Check:
    """A check whose refusal reads ``<where>: <value> is not <expected>``."""

    def check(value: Any, path: str) -> str | None:
        return None if ok(value) else f"{where(path)}: {shown(value)} is not {expected}"

    return check


def problem_check(problem: Callable[[Any], str | None]) -> Check:
    """A check from a function that says what is wrong with a value (``officer_problem``)."""

    def check(value: Any, path: str) -> str | None:
        found = problem(value)
        return None if found is None else f"{where(path)}: {found}"

    return check


def whole_number(low: int = 0, high: int = MAX_SAFE_INTEGER) -> Check:
    return kind(f"a whole number in {low}..{high}", lambda v: is_integer(v) and low <= v <= high)


def text(pattern: re.Pattern[str], expected: str) -> Check:
    """Text that ``pattern`` matches from its start (patterns end in ``\\Z``)."""
    return kind(expected, lambda v: isinstance(v, str) and pattern.match(v) is not None)


def one_of(values: Sequence[str]) -> Check:
    return kind(f"one of {', '.join(values)}", lambda v: isinstance(v, str) and v in values)


def one_line(max_chars: int) -> Check:
    """Printable text on one line (no control character) of at most ``max_chars`` characters."""

    def check(value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            return f"{where(path)}: {shown(value)} is not a string"
        if len(value) > max_chars:
            return f"{where(path)}: {len(value)} characters, more than the {max_chars} allowed"
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
            return f"{where(path)}: holds a control character (must be one line)"
        return None

    return check


def identifier(reserved: Sequence[str] = ()) -> Check:
    """A device or station id (the ledger's DEVICE_ID_PATTERN), none of ``reserved``."""
    unless = f", not {', '.join(reserved)}" if reserved else ""
    return kind(f"a device/station id ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}{unless})",
                lambda v: isinstance(v, str) and bool(DEVICE_ID_PATTERN.match(v)) and v not in reserved)


HEX64 = kind("64 lowercase hex digits", is_hex64)
COUNT = whole_number()
INTEGER = kind("a whole number", is_integer)
BOOLEAN = kind("true or false", lambda v: isinstance(v, bool))
TEXT = kind("a non-empty string", lambda v: isinstance(v, str) and v != "")
DEVICE_ID = identifier()


def list_of(item: Check, max_items: int, noun: str) -> Check:
    """A list of at most ``max_items`` items (``noun``: what they are called in a refusal), each ``item``."""

    def check(value: Any, path: str) -> str | None:
        if not isinstance(value, list):
            return f"{where(path)}: not a list"
        if len(value) > max_items:
            return f"{len(value)} {noun}, more than the {max_items} allowed"
        for index, element in enumerate(value):
            found = item(element, f"{path}[{index}]")
            if found is not None:
                return found
        return None

    return check


def object_of(fields: Mapping[str, Check]) -> Check:
    """An object with exactly ``fields``, each judged by its check."""
    names = list(fields)
    spelt = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]

    def check(value: Any, path: str) -> str | None:
        if not isinstance(value, dict) or set(value) != set(names):
            return f"{path}: not an object with {spelt}"
        for name, judge in fields.items():
            found = judge(value[name], f"{path}.{name}")
            if found is not None:
                return found
        return None

    return check


class LineForm:
    """The line of a signed message that holds ``payload`` and ``signature`` (a base of the dataclasses that
    carry them: SignedLine, SignedAck, SignedAssignment)."""

    payload: bytes
    signature: bytes

    def text(self) -> str:
        """``payload TAB signature-hex``, as a ledger record carries it."""
        return self.payload.decode("ascii") + "\t" + self.signature.hex()

    def to_line(self) -> bytes:
        return self.payload + b"\t" + self.signature.hex().encode("ascii") + b"\n"


@dataclass(frozen=True)
class SignedLine(LineForm):
    value: dict[str, Any]  # the payload's object, holding exactly the declared fields
    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class MessageFormat:
    """One signed message: its name, signature domain, header, fields (checked in this order) and rules."""

    what: str  # starts every refusal: "ack", "health report"
    domain: bytes  # b"": declared fields only, never signed (the enrolment request)
    header: Mapping[str, Any]  # constant fields: {"v": 1, "type": "ack"}
    fields: Mapping[str, Check]
    max_bytes: int = 0  # of a signed line (0: not sent as a line)
    rules: tuple[Rule, ...] = ()
    one_line: bool = False  # a line must end in its LF (else the LF is optional)
    names: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", frozenset(self.header) | frozenset(self.fields))

    def _fail(self, problem: str, what: str | None) -> RecordFormatError:
        return RecordFormatError(f"{what or self.what}: {problem}")

    def check(self, value: Mapping[str, Any], what: str | None = None) -> None:
        """Raise RecordFormatError ("<what>: field ...") naming the first thing wrong with ``value``: an unknown
        or missing field, a header that is not this message's, a field its check refuses, a broken rule."""
        unknown = sorted(set(value) - self.names)
        if unknown:
            raise self._fail(f"field {unknown[0]!r} is unknown (known: {', '.join(self._order())})", what)
        missing = [name for name in self._order() if name not in value]
        if missing:
            raise self._fail(f"field {missing[0]!r} is missing", what)
        for name, expected in self.header.items():
            # Strict: true is not 1 (bool is a subclass of int, and True == 1).
            if type(value[name]) is not type(expected) or value[name] != expected:
                spelt = "/".join(repr(n) for n in self.header)
                must = "/".join(repr(v) if isinstance(v, str) else str(v) for v in self.header.values())
                raise self._fail(f"field {name!r}: {shown(value[name])} is not {expected!r} "
                                 f"(fields {spelt} must be {must})", what)
        for name, judge in self.fields.items():
            found = judge(value[name], name)
            if found is not None:
                raise self._fail(found, what)
        for rule in self.rules:
            found = rule(value)
            if found is not None:
                raise self._fail(found, what)

    def _order(self) -> list[str]:
        return [*self.header, *self.fields]

    def payload(self, body: Mapping[str, Any], what: str | None = None) -> bytes:
        """The canonical bytes of ``body`` with this message's header, once every check passes."""
        value = {**self.header, **body}
        self.check(value, what)
        return self.encode(value, what)

    def encode(self, value: Mapping[str, Any], what: str | None = None) -> bytes:
        """The canonical bytes of ``value`` as it is (no check: the bundle signs all fields but its signature)."""
        try:
            return canonical_json(value)
        except EncodingError as exc:
            raise self._fail(str(exc), what) from None

    def _domain(self) -> bytes:
        # Nothing is ever signed or verified without a domain of its own (an unsigned format declares b"").
        if not self.domain:
            raise TypeError(f"{self.what}: not a signed message (no signature domain)")
        return self.domain

    def signature(self, payload: bytes, key: DeviceKey) -> bytes:
        return key.sign(payload, domain=self._domain())

    def check_signature(self, public_key: Ed25519PublicKey, payload: bytes, signature: bytes) -> bool:
        return verify_signature(public_key, payload, signature, domain=self._domain())

    def sign(self, body: Mapping[str, Any], key: DeviceKey) -> SignedLine:
        """``body`` checked, encoded and signed under this message's domain, as one line."""
        payload = self.payload(body)
        signed = SignedLine({**self.header, **body}, payload, self.signature(payload, key))
        if self.max_bytes and len(signed.to_line()) > self.max_bytes:
            raise self._fail(f"{len(signed.to_line())} bytes, more than the {self.max_bytes} allowed", None)
        return signed

    def parse(self, line: bytes) -> SignedLine:
        """Split, parse and check ``line`` (format only: :meth:`verify` checks the signature). The final LF is
        optional unless ``one_line``; then the line must be exactly one line ending in LF."""
        if len(line) > self.max_bytes:
            raise self._fail(f"{len(line)} bytes, more than the {self.max_bytes} allowed", None)
        if self.one_line and (not line.endswith(b"\n") or b"\n" in line[:-1]):
            raise self._fail("not exactly one line ending in LF", None)
        body = line[:-1] if line.endswith(b"\n") else line
        payload, tab, sig_hex = body.rpartition(b"\t")
        if not tab or len(sig_hex) != 128:
            raise self._fail("not 'payload TAB signature-hex'", None)
        if not _SIGNATURE_HEX.match(sig_hex):
            raise self._fail("signature is not hex (128 lowercase digits)", None)
        try:
            value = parse_canonical_json(payload)
        except EncodingError as exc:
            raise self._fail(str(exc), None) from None
        if not isinstance(value, dict):
            raise self._fail("not a JSON object", None)
        self.check(value)
        return SignedLine(value, payload, bytes.fromhex(sig_hex.decode("ascii")))

    def verify(self, signed: SignedLine, public_key: Ed25519PublicKey, device: str, *, what: str,
               signer: str = "key", then: str = "") -> None:
        """Raise VerificationError ("<what>: ...<then>") unless ``signed`` names ``public_key`` in its ``key``
        field, is signed by it under this message's domain and is about ``device`` (its ``device`` field)."""
        stated = signed.value["key"]
        if stated != fingerprint(public_key_raw(public_key)):
            raise VerificationError(f"{what}: signed by another {signer} ({stated[:16]}...){then}")
        if not self.check_signature(public_key, signed.payload, signed.signature):
            raise VerificationError(f"{what}: signature invalid{then}")
        if signed.value["device"] != device:
            raise VerificationError(f"{what}: about device {signed.value['device']!r}, not {device!r}{then}")
