"""The MAT v5 binary format walked by hand, in constant memory, before scipy reads anything.

* `v5_elements` -- the top-level elements (data offset, byte count, compressed).
* `inflated_size` -- how many bytes a zlib element really inflates to (stops at a limit).
* `check_v5_struct` -- walk a struct variable field by field and refuse any field declaring
  more elements than the bytes stored for it (a tiny file cannot make scipy allocate gigabytes).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from typing import Any

from neuroalign.data.matio.common import MatInfo, fail, human

MI_COMPRESSED = 15


def v5_elements(path: Path) -> list[tuple[int, int, bool]] | None:
    """Top-level v5 elements as (data offset, byte count, compressed), or None when unparsable."""
    out = []
    size = path.stat().st_size
    with open(path, "rb") as fh:
        header = fh.read(128)
        if len(header) < 128 or header[126:128] not in (b"IM", b"MI"):
            return None
        endian = "<" if header[126:128] == b"IM" else ">"
        pos = 128
        while pos + 8 <= size:
            fh.seek(pos)
            mdtype, nbytes = struct.unpack(endian + "II", fh.read(8))
            if mdtype >> 16:  # small data element: not a variable
                return None
            out.append((pos + 8, min(nbytes, max(size - pos - 8, 0)), mdtype == MI_COMPRESSED))
            pos += 8 + nbytes
    return out


def inflated_size(path: Path, offset: int, nbytes: int, limit: int) -> int:
    """Bytes a zlib stream at `offset` inflates to (stops counting past `limit`); constant memory."""
    inflater = zlib.decompressobj()
    total, left = 0, nbytes
    with open(path, "rb") as fh:
        fh.seek(offset)
        while left > 0 and total <= limit:
            chunk = fh.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
            data = chunk
            while data and total <= limit:
                try:
                    out = inflater.decompress(data, 1 << 22)
                except zlib.error:
                    return total
                total += len(out)
                data = inflater.unconsumed_tail
            if inflater.eof:
                break
    return total


class V5Stream:
    """Sequential bytes of one v5 element (plain or zlib), read and skipped in constant memory."""

    def __init__(self, fh: Any, nbytes: int, compressed: bool) -> None:
        self.fh, self.left, self.buf = fh, nbytes, b""
        self.inflater = zlib.decompressobj() if compressed else None

    def _more(self, want: int) -> bytes:
        want = max(1 << 16, min(want, 1 << 20))
        if self.inflater is None:
            data = self.fh.read(min(self.left, want)) if self.left > 0 else b""
            self.left -= len(data)
            return data
        while True:
            data = self.inflater.unconsumed_tail
            if not data:
                if self.left <= 0 or self.inflater.eof:
                    return b""
                data = self.fh.read(min(self.left, 1 << 16))
                self.left -= len(data)
                if not data:
                    return b""
            try:
                out = self.inflater.decompress(data, want)
            except zlib.error:
                return b""
            if out:
                return out

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            more = self._more(n - len(self.buf))
            if not more:
                break
            self.buf += more
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def skip(self, n: int) -> int:
        """Skip up to `n` bytes; returns how many were really there."""
        done = 0
        while done < n:
            if not self.buf:
                if self.inflater is None:  # plain: seek instead of reading
                    k = min(n - done, self.left)
                    self.fh.seek(k, 1)
                    self.left -= k
                    done += k
                    break
                self.buf = self._more(n - done)
                if not self.buf:
                    break
            k = min(len(self.buf), n - done)
            self.buf, done = self.buf[k:], done + k
        return done


def check_v5_matrix(path: Path, s: V5Stream, endian: str, nbytes: int, where: str, depth: int = 0) -> None:
    """Walk one miMATRIX body of `nbytes` bytes (recursing into struct/cell elements) and refuse
    dimensions declaring more elements than the bytes stored for them (at least 1 byte each)."""
    consumed = 0

    def truncated() -> ValueError:
        return fail(path, f"{where} is cut short (its header declares {nbytes} bytes); "
                    "the file is truncated or corrupt")

    def element() -> bytes:
        nonlocal consumed
        head = s.read(8)
        if len(head) < 8:
            raise truncated()
        mdtype, n = struct.unpack(endian + "II", head)
        if mdtype >> 16:  # small data element: up to 4 bytes inside the tag
            consumed += 8
            return head[4:4 + (mdtype >> 16)]
        if n > min(nbytes, 1 << 20):
            raise fail(path, f"{where} has a header element declaring {n} bytes; expected a few bytes "
                       "(the file is corrupt)")
        data = s.read(n + (-n % 8))
        if len(data) < n:
            raise truncated()
        consumed += 8 + len(data)
        return data[:n]

    if nbytes == 0:
        return  # empty matrix
    if depth > 16:
        raise fail(path, f"{where} is nested more than 16 levels deep; expected a plain struct")
    flags = element()
    cls = struct.unpack(endian + "I", flags[:4])[0] & 0xFF if len(flags) >= 4 else 0
    dims_raw = element()
    dims = struct.unpack(endian + f"{len(dims_raw) // 4}i", dims_raw[: len(dims_raw) // 4 * 4])
    element()  # array name (empty inside structs and cells)
    if any(d < 0 for d in dims):
        raise fail(path, f"{where} declares negative dimensions {dims}; the file is corrupt")
    count = math.prod(dims)
    subs: list[str] = []
    if cls in (2, 3):  # struct or object: fields of every element, one miMATRIX each
        if cls == 3:
            element()  # class name
        field_len = element()
        width = struct.unpack(endian + "i", field_len[:4])[0] if len(field_len) >= 4 else 0
        names = element()
        fields = [names[i:i + width].split(b"\0")[0].decode("latin-1") for i in range(0, len(names), width)] \
            if width > 0 else []
        if count * len(fields) * 8 > nbytes - consumed:
            raise fail(path, f"{where} declares {dims} x {len(fields)} fields but the file holds only "
                       f"{human(nbytes)} for it; the file is truncated or corrupt")
        subs = [f"{where}.{f}" if count == 1 else f"{where}({i + 1}).{f}" for i in range(count) for f in fields]
    elif cls == 1:  # cell
        if count * 8 > nbytes - consumed:
            raise fail(path, f"{where} declares a {dims} cell but the file holds only {human(nbytes)} for it; "
                       "the file is truncated or corrupt")
        subs = [f"{where}{{{i + 1}}}" for i in range(count)]
    elif cls != 5 and count > nbytes - consumed:  # sparse (5) dims are not its stored element count
        raise fail(path, f"{where} declares shape {dims} ({count} elements) but the file holds only "
                   f"{human(nbytes - consumed)} for it (expected at least 1 byte per element); "
                   "the file is truncated or corrupt")
    for sub in subs:
        head = s.read(8)
        if len(head) < 8:
            raise truncated()
        _mdtype, n = struct.unpack(endian + "II", head)
        consumed += 8
        if n > nbytes - consumed:
            raise fail(path, f"{sub} declares {n} bytes but its struct holds only {nbytes - consumed}; "
                       "the file is truncated or corrupt")
        check_v5_matrix(path, s, endian, n, sub, depth + 1)
        consumed += n
    rest = nbytes - consumed
    if rest > 0 and s.skip(rest) < rest:
        raise truncated()


def check_v5_struct(path: Path, info: MatInfo, name: str) -> None:
    """Refuse a v5 struct variable whose fields declare more data than the file stores, before scipy reads it."""
    elements = v5_elements(path)
    names = list(info.variables)
    if elements is None or len(elements) != len(names):
        return  # scipy refuses an element list it cannot follow either
    offset, nbytes, compressed = elements[names.index(name)]
    with open(path, "rb") as fh:
        endian = "<" if fh.read(128)[126:128] == b"IM" else ">"
        fh.seek(offset)
        stream = V5Stream(fh, nbytes, compressed)
        if compressed:
            head = stream.read(8)
            if len(head) < 8:
                raise fail(path, f"struct {name!r} is cut short; the file is truncated or corrupt")
            nbytes = struct.unpack(endian + "II", head)[1]
        check_v5_matrix(path, stream, endian, nbytes, name)
