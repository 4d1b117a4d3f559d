"""The wire format between the client and its gateways: length-prefixed frames.

A frame is a fixed head (magic, header length, payload length), a small JSON
object (the header: what the frame is, for which host) and raw bytes (a chunk of
output, a key, stdin), which travel as they are. Nothing received is executed:
the header is parsed by `json`, never pickled or evaluated, and only its known
fields are read. A stream that is not ours (a login script printing on stdout),
a frame larger than allowed or one cut short is a typed `FrameError`.

Only the standard library is imported, so that a gateway can read frames before
its fabexec is there.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

try:
    from .errors import FabexecError
except ImportError:  # pragma: no cover - loaded on its own
    FabexecError = Exception  # type: ignore[misc,assignment]

#: Changes whenever a frame's meaning changes; client and gateway must agree.
PROTOCOL = 3

#: Every frame starts with these bytes, then the two lengths.
MAGIC = b"FXF1"
HEAD = struct.Struct(">4sII")

#: Bounds on what a peer may make us hold for one frame.
MAX_HEADER = 1 << 20
MAX_PAYLOAD = 64 << 20


class FrameError(FabexecError, ValueError):  # type: ignore[misc]
    """A stream that is not fabexec frames, a frame too large, or one cut short."""


@dataclass
class Frame:
    """One message: ``header['kind']`` says what it is; ``payload`` is raw bytes."""

    header: Dict[str, Any]
    payload: bytes = field(default=b"", repr=False)

    @property
    def kind(self) -> str:
        return str(self.header.get("kind", ""))


def encode(header: Dict[str, Any], payload: bytes = b"") -> bytes:
    """``header`` (a JSON object) and ``payload`` as one frame."""
    text = json.dumps(header, separators=(",", ":")).encode()
    if len(text) > MAX_HEADER or len(payload) > MAX_PAYLOAD:
        raise FrameError(f"frame too large to send: header {len(text)} bytes, "
                         f"payload {len(payload)} bytes")
    return HEAD.pack(MAGIC, len(text), len(payload)) + text + payload


class Parser:
    """Frames out of a byte stream fed in chunks of any size.

    ``feed`` returns the frames completed so far; ``close`` says whether the
    stream ended between frames (a cut one raises).
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._buffer = bytearray()
        self._need: Optional[tuple] = None  # (header length, payload length) once read

    def feed(self, data: bytes) -> List[Frame]:
        self._buffer += data
        frames = []
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _next(self) -> Optional[Frame]:
        if self._need is None:
            if len(self._buffer) < HEAD.size:
                if not MAGIC.startswith(bytes(self._buffer[:len(MAGIC)])):
                    raise self._garbage()
                return None
            magic, header_size, payload_size = HEAD.unpack_from(self._buffer)
            if magic != MAGIC:
                raise self._garbage()
            if header_size > MAX_HEADER or payload_size > self.max_payload:
                raise FrameError(f"frame too large: header {header_size} bytes (at most "
                                 f"{MAX_HEADER}), payload {payload_size} bytes (at most "
                                 f"{self.max_payload})")
            self._need = (header_size, payload_size)
        header_size, payload_size = self._need
        end = HEAD.size + header_size + payload_size
        if len(self._buffer) < end:
            return None
        raw = bytes(self._buffer[HEAD.size:HEAD.size + header_size])
        payload = bytes(self._buffer[HEAD.size + header_size:end])
        del self._buffer[:end]
        self._need = None
        try:
            header = json.loads(raw.decode())
        except (UnicodeDecodeError, ValueError) as e:
            raise FrameError(f"frame header is not JSON: {e}") from None
        if not isinstance(header, dict) or not isinstance(header.get("kind"), str):
            raise FrameError(f"frame header is not an object with a kind: {raw[:80]!r}")
        return Frame(header, payload)

    def _garbage(self) -> FrameError:
        return FrameError(f"not a fabexec frame stream: it starts with "
                          f"{bytes(self._buffer[:40])!r}")

    def close(self) -> None:
        """The stream ended: raise if it ended inside a frame."""
        if self._buffer:
            raise FrameError(f"stream cut inside a frame ({len(self._buffer)} bytes of it "
                             "came)")
