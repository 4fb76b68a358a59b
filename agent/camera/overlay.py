"""What is burnt into every frame: the time, the device and the officer, and (for tests) a frame code.

Both functions draw in place on an ``(H, W, 3|4)`` uint8 array in any channel order: the overlay uses only
black and white, so BGR, RGB and the Pi's padded RGB888 buffers all look the same. On the Pi they run in
picamera2's ``post_callback`` under the camera lock, so they touch only the pixels they change: no copies
of the frame and no colour conversion.

The text is crisp, two-level white on black, on every OpenCV: 4.x draws ``LINE_8`` text that way, 5.x
anti-aliases it whatever the line type, so the box is binarised after drawing. Measured after libx264 at
1080p and 4 Mbit/s (docs/recording.md, "The overlay"), crisp text keeps the officer's id further from a
one-character misreading than anti-aliased text does, and the box is small enough that the threshold costs
about a tenth of a millisecond.

The frame code is a machine-readable frame counter: two rows of eighteen 16x16 blocks, each row a white or
black guard block, sixteen data bits (most significant first) and the opposite guard. The blocks sit on the
16-pixel macroblock grid so each macroblock is flat black or flat white, which even a starved libx264 keeps;
the reader takes its threshold from the guards and refuses to guess when a block is ambiguous.
"""

from __future__ import annotations

import datetime as dt

import cv2
import numpy as np

from agent.errors import CameraError

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_WHITE = (255, 255, 255, 255)
_TEXT_THRESHOLD = 128  # grey levels at or above it are text, below it box
_MAX_ID_CHARS = 24  # an over-long id must not push the box off the frame

CODE_BITS = 32
_BLOCK = 16
_ROWS = 2
_DATA_COLS = CODE_BITS // _ROWS
_COLS = _DATA_COLS + 2  # guard, data bits, guard
_CODE_W = _COLS * _BLOCK
_CODE_H = _ROWS * _BLOCK
_CODE_X = _BLOCK
_INNER = _BLOCK // 4  # sample the centre of each block: H.264 rings at the edges
_MIN_CONTRAST = 64.0  # white guard minus black guard, in grey levels
_MIN_MARGIN = 32.0  # how far a data block must sit from the threshold to be read at all
# Guard colours (255 white, 0 black) at (row, first column) and (row, last column).
_GUARDS = ((255, 0), (0, 255))


def format_wall_time(wall_time_us: int) -> str:
    """UTC to the second, ISO 8601 with a Z: what an auditor reads off the frame."""
    moment = dt.datetime.fromtimestamp(wall_time_us // 1_000_000, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _printable(text: str) -> str:
    # Hershey fonts draw ASCII only; anything else would come out as '?' anyway.
    ascii_text = text.encode("ascii", "replace").decode("ascii")
    return ascii_text if len(ascii_text) <= _MAX_ID_CHARS else ascii_text[: _MAX_ID_CHARS - 1] + "~"


def draw_overlay(
    frame: np.ndarray,
    wall_time_us: int,
    device_id: str,
    officer_id: str,
    clock_trusted: bool,
    frame_number: int,
) -> None:
    """Draw the time (or CLOCK NOT SET), device, officer and frame number in a black box, top left."""
    height, width = frame.shape[:2]
    time_text = format_wall_time(wall_time_us) if clock_trusted else "CLOCK NOT SET"
    lines = (
        f"{time_text}  #{frame_number}",
        f"DEV {_printable(device_id)}  OFC {_printable(officer_id)}",
    )
    # Scale with the frame height so the text is as legible at 360p as at 1080p.
    scale = max(0.35, 0.75 * height / 720)
    thickness = 1 if scale < 0.9 else 2
    pad = max(3, int(6 * scale))
    sizes = [cv2.getTextSize(line, _FONT, scale, thickness) for line in lines]
    ascent = max(h for (_, h), _ in sizes)
    line_h = ascent + max(base for _, base in sizes)
    box_w = min(width, max(w for (w, _), _ in sizes) + 2 * pad)
    box_h = min(height, len(lines) * (line_h + pad) + pad)
    box = frame[:box_h, :box_w]
    box[...] = 0
    for i, line in enumerate(lines):
        baseline = pad + i * (line_h + pad) + ascent
        cv2.putText(box, line, (pad, baseline), _FONT, scale, _WHITE, thickness, cv2.LINE_8)
    # In place on the view: only the box's pixels are touched, the rest of the frame is not copied.
    cv2.threshold(box, _TEXT_THRESHOLD - 1, 255, cv2.THRESH_BINARY, dst=box)


def _code_origin(height: int, width: int) -> tuple[int, int] | None:
    """Top-left corner of the frame code, bottom left on the macroblock grid; None if the frame is too small."""
    y = ((height - _CODE_H - _BLOCK // 2) // _BLOCK) * _BLOCK
    if y < 0 or width < _CODE_X + _CODE_W:
        return None
    return _CODE_X, y


def draw_frame_code(frame: np.ndarray, n: int) -> None:
    """Draw ``n`` (0 <= n < 2**32) as the block code, bottom left."""
    if not 0 <= n < 1 << CODE_BITS:
        raise CameraError(f"frame code {n} does not fit in {CODE_BITS} bits")
    height, width = frame.shape[:2]
    origin = _code_origin(height, width)
    if origin is None:
        raise CameraError(f"frame of {width}x{height} is too small for the frame code")
    x, y = origin
    bits = (n >> np.arange(CODE_BITS - 1, -1, -1)) & 1
    cells = np.empty((_ROWS, _COLS), dtype=np.uint8)
    cells[:, 1:-1] = bits.reshape(_ROWS, _DATA_COLS).astype(np.uint8) * 255
    cells[:, 0] = [first for first, _ in _GUARDS]
    cells[:, -1] = [last for _, last in _GUARDS]
    for row in range(_ROWS):
        line = np.repeat(cells[row], _BLOCK)
        if frame.ndim == 3:
            # Spell out the channels: numpy's broadcast over a length-1 channel axis is 30x slower.
            line = np.repeat(line[:, None], frame.shape[2], axis=1)
        frame[y + row * _BLOCK : y + (row + 1) * _BLOCK, x : x + _CODE_W] = line[None]


def read_frame_code(frame: np.ndarray) -> int | None:
    """Decode the frame code from a (possibly lossy) frame; None if absent or not clearly readable."""
    height, width = frame.shape[:2]
    origin = _code_origin(height, width)
    if origin is None:
        return None
    x, y = origin
    region = frame[y : y + _CODE_H, x : x + _CODE_W].astype(np.float32)
    if region.ndim == 3:
        region = region[:, :, :3].mean(axis=2)  # ignore a padding/alpha channel
    blocks = region.reshape(_ROWS, _BLOCK, _COLS, _BLOCK)[:, _INNER:-_INNER, :, _INNER:-_INNER]
    values = blocks.mean(axis=(1, 3))
    whites = [values[r, 0] if first else values[r, -1] for r, (first, _) in enumerate(_GUARDS)]
    blacks = [values[r, -1] if first else values[r, 0] for r, (first, _) in enumerate(_GUARDS)]
    if min(whites) - max(blacks) < _MIN_CONTRAST:
        return None
    threshold = (sum(whites) + sum(blacks)) / (len(whites) + len(blacks))
    data = values[:, 1:-1].reshape(-1)
    if np.any(np.abs(data - threshold) < _MIN_MARGIN):
        return None
    result = 0
    for bit in data > threshold:
        result = (result << 1) | int(bit)
    return result
