"""Host driver: talk to a board (or its simulation) over the frame protocol of
:mod:`softfloor.protocol`.

>>> with Host.open("/dev/ttyUSB1", 115200) as h:                    # doctest: +SKIP
...     info = h.info()                       # which model, which shapes
...     outputs = h.run(codes)                # (samples, output elements) integer codes

``Host.open`` takes anything pyserial's ``serial_for_url`` does: a device (``/dev/ttyUSB1``,
``COM3``) or a URL (``socket://127.0.0.1:PORT``, which is how ``softfloor run --sim`` reaches
the simulated board top). :meth:`Host.run` keeps two requests in flight, so the link's two
directions overlap.
"""
from __future__ import annotations

import collections
import time

import numpy as np

from . import protocol as proto

__all__ = ["Host", "LinkError", "open_port"]

WINDOW = 2


class LinkError(RuntimeError):
    """No reply, a reply that breaks the protocol, or an ERROR reply."""


def open_port(port: str, baud: int, timeout: float = 0.05):
    """A pyserial port (device path or URL); one clear error when it is not there."""
    try:
        import serial
    except ImportError:
        raise LinkError("the host link needs pyserial: pip install pyserial") from None
    try:
        return serial.serial_for_url(port, baudrate=baud, timeout=timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        raise LinkError(f"cannot open {port}: {e} (is the board plugged in? "
                        f"on Linux the UART is usually /dev/ttyUSB1 for an iCEBreaker, "
                        f"/dev/ttyUSB0 for a ULX3S)") from None


class Host:
    """The protocol over a byte port with ``write``, ``read`` and a short read ``timeout``."""

    def __init__(self, port, baud: int = 115200, reply_timeout: float | None = None):
        self.port = port
        self.baud = baud
        self.dec = proto.SlipDecoder()
        self.bodies: collections.deque = collections.deque()
        self.reply_timeout = reply_timeout
        self.link: proto.LinkInfo | None = None

    @classmethod
    def open(cls, port: str, baud: int = 115200, **kw) -> "Host":
        return cls(open_port(port, baud), baud, **kw)

    def __enter__(self) -> "Host":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.port.close()

    # -- bytes and frames ------------------------------------------------------------------
    def _timeout(self, nbytes: int) -> float:
        if self.reply_timeout is not None:
            return self.reply_timeout
        return 2.0 + 40.0 * nbytes / self.baud

    def send(self, data: bytes) -> None:
        """Raw bytes (a frame from :func:`softfloor.protocol.frame`, or anything)."""
        self.port.write(data)

    def reply(self, nbytes: int = 64) -> tuple[int, bytes]:
        """The next reply frame as ``(TYPE, payload)``; :class:`LinkError` on a timeout or a
        frame that does not check out."""
        deadline = time.monotonic() + self._timeout(nbytes)
        while not self.bodies:
            chunk = self.port.read(4096)
            if chunk:
                self.bodies.extend(self.dec.feed(chunk))
            elif time.monotonic() > deadline:
                raise LinkError(f"no reply within {self._timeout(nbytes):.1f} s: is the board "
                                f"programmed with a softfloor bitstream, at {self.baud} baud?")
        body, bad_escape, _ = self.bodies.popleft()
        if bad_escape:
            raise LinkError("a reply frame has a bad escape sequence")
        try:
            return proto.parse_body(body)
        except proto.ProtocolError as e:
            raise LinkError(f"bad reply: {e}") from None

    def resync(self, quiet: float = 0.1) -> None:
        """Close any broken frame on the board (an END) and drop what is in flight."""
        self.port.write(bytes([proto.END]))
        t_end = time.monotonic() + quiet
        while time.monotonic() < t_end:
            if self.port.read(4096):
                t_end = time.monotonic() + quiet
        self.dec = proto.SlipDecoder()
        self.bodies.clear()

    # -- requests ------------------------------------------------------------------------
    def info(self) -> proto.LinkInfo:
        """INFO: the loaded model's hash, shapes and beat layouts (kept in ``self.link``)."""
        self.send(proto.frame(proto.INFO))
        t, payload = self.reply()
        _check(t, payload, proto.INFO_REPLY, "INFO")
        self.link = proto.parse_info(payload)
        return self.link

    def run(self, codes, window: int = WINDOW, progress=None) -> np.ndarray:
        """INFER every row of ``codes`` (input codes, one sample per row), ``window`` requests
        in flight; the output codes, one row per sample. An ERROR reply raises
        :class:`LinkError` naming the sample."""
        if self.link is None:
            self.info()
        info = self.link
        in_lay, out_lay = info.input.layout(), info.output.layout()
        codes = np.asarray(codes, dtype=np.int64).reshape(len(codes), -1)
        if codes.shape[1] != info.input.elements:
            raise LinkError(f"the board's model takes {info.input.elements} input codes per "
                            f"sample, the inputs have {codes.shape[1]}")
        if not 1 <= window <= proto.MAX_IN_FLIGHT:
            raise ValueError(f"window must be 1..{proto.MAX_IN_FLIGHT}, got {window}")
        frames = [proto.frame(proto.INFER, proto.sample_to_bytes(in_lay, row)) for row in codes]
        out = np.zeros((len(codes), info.output.elements), dtype=np.int64)
        sent = 0
        for k in range(len(codes)):
            while sent < len(codes) and sent < k + window:
                self.send(frames[sent])
                sent += 1
            t, payload = self.reply(len(frames[k]) + info.output.sample_bytes + 4)
            _check(t, payload, proto.RESULT, f"INFER of sample {k}")
            out[k] = proto.bytes_to_sample(out_lay, payload)
            if progress:
                progress(k + 1, len(codes))
        return out


def _check(t: int, payload: bytes, want: int, what: str) -> None:
    if t == proto.ERROR:
        code = payload[0] if payload else 0
        raise LinkError(f"{what}: the board replied ERROR {code} "
                        f"({proto.ERRORS.get(code, 'unknown code')})")
    if t != want:
        raise LinkError(f"{what}: expected a reply of TYPE 0x{want:02X}, got 0x{t:02X}")
