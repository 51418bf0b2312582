"""The on-disk format of the spool, as pure functions from records to bytes and back.

A *segment* file holds one spill: an 8-byte magic followed by blocks. A *block* is a
13-byte header (crc32, codec, stored length, raw length) and a payload that is either
raw or zlib-compressed *frames*. A frame is one record: a 24-byte header (crc32, data
length, seq, ts) and the data. Both checksums are zlib.crc32: the block's covers its
header and payload, the frame's covers its header and data, so a damaged block still
yields every frame that checks out. The *tombstone* file lists seqs that were acked
while their segment still held unacked records; it is written only by ``close()``.

Nothing here touches the filesystem; ``store.py`` does that. docs/spool.md has the
byte layout and the recovery rules.
"""

from __future__ import annotations

import bisect
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.spool.record import Record

SEGMENT_MAGIC = b"TSPSEG1\n"
TOMBSTONE_MAGIC = b"TSPACK1\n"
SEGMENT_SUFFIX = ".seg"
TMP_SUFFIX = ".tmp"
TOMBSTONE_NAME = "acked"
CORRUPT_DIR = "corrupt"

CODEC_RAW = 0
CODEC_ZLIB = 1
ZLIB_LEVEL = 6

BLOCK_HEADER = struct.Struct("<IBII")  # crc32, codec, stored_len, raw_len
FRAME_HEADER = struct.Struct("<IIQd")  # crc32, data_len, seq, ts
_FRAME_TAIL = struct.Struct("<IQd")  # the part of FRAME_HEADER the crc covers
_TOMB_HEAD = struct.Struct("<QI")  # max_segment, range count
_RANGE = struct.Struct("<QQ")
_CRC = struct.Struct("<I")

# A block is closed once it holds this much raw frame data, so damage costs at most one
# block. One record larger than this gets a block of its own.
BLOCK_RAW_TARGET = 64 * 1024
# zlib cannot expand more than ~1032:1; bounds what a damaged header can make us inflate.
_MAX_INFLATE_RATIO = 1032

_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")


class SegmentDamage(Exception):
    """Bytes read back from a segment or tombstone fail a check; the message says which."""


def segment_name(seg_id: int) -> str:
    return f"{seg_id:020d}{SEGMENT_SUFFIX}"


def parse_segment_name(name: str) -> int | None:
    m = _SEGMENT_NAME.match(name)
    return int(m.group(1)) if m else None


def encode_frame(rec: Record) -> bytes:
    tail = _FRAME_TAIL.pack(len(rec.data), rec.seq, rec.ts)
    return _CRC.pack(zlib.crc32(rec.data, zlib.crc32(tail))) + tail + rec.data


def encode_block(raw: bytes) -> bytes:
    """Compress ``raw`` frames into one block, or store them raw when zlib saves little.

    Raw blocks are also the more robust: a bit flip there costs one frame, while in a
    deflate stream it costs the rest of the block.
    """
    packed = zlib.compress(raw, ZLIB_LEVEL)
    codec = CODEC_ZLIB
    if len(packed) > len(raw) * 7 // 8:
        packed, codec = raw, CODEC_RAW
    head = BLOCK_HEADER.pack(0, codec, len(packed), len(raw))
    crc = zlib.crc32(packed, zlib.crc32(head[4:]))
    return _CRC.pack(crc) + head[4:] + packed


def encode_segment(records: Sequence[Record]) -> tuple[bytes, list[tuple[int, int]]]:
    """Encode ``records`` as one segment file.

    Returns the file's bytes and, per record, where it lives: the block's offset in the
    file and the frame's offset inside the block's raw (decompressed) bytes.
    """
    out = [SEGMENT_MAGIC]
    pos = len(SEGMENT_MAGIC)
    where: list[tuple[int, int]] = []
    frames: list[bytes] = []
    raw_len = 0

    def close_block() -> None:
        nonlocal pos, raw_len
        block = encode_block(b"".join(frames))
        out.append(block)
        pos += len(block)
        frames.clear()
        raw_len = 0

    for rec in records:
        if frames and raw_len + FRAME_HEADER.size + len(rec.data) > BLOCK_RAW_TARGET:
            close_block()
        where.append((pos, raw_len))
        frame = encode_frame(rec)
        frames.append(frame)
        raw_len += len(frame)
    if frames:
        close_block()
    return b"".join(out), where


def open_block(head: bytes, payload: bytes) -> bytes:
    """Check and unpack one block read at a known offset; raise SegmentDamage if it is bad."""
    if len(head) < BLOCK_HEADER.size:
        raise SegmentDamage("truncated block header")
    crc, codec, stored, raw_len = BLOCK_HEADER.unpack_from(head)
    if len(payload) != stored:
        raise SegmentDamage("truncated block")
    if zlib.crc32(payload, zlib.crc32(head[4 : BLOCK_HEADER.size])) != crc:
        raise SegmentDamage("block checksum mismatch")
    if codec == CODEC_RAW:
        raw = payload
    elif codec == CODEC_ZLIB:
        try:
            raw = zlib.decompress(payload)
        except zlib.error as exc:
            raise SegmentDamage(f"block does not inflate: {exc}") from exc
    else:
        raise SegmentDamage(f"unknown codec {codec}")
    if len(raw) != raw_len:
        raise SegmentDamage("block length mismatch")
    return raw


def block_size(head: bytes) -> int:
    """Payload length announced by a block header (unchecked until open_block)."""
    _crc, _codec, stored, _raw = BLOCK_HEADER.unpack_from(head)
    return int(stored)


def record_at(raw: bytes, offset: int, seq: int) -> Record:
    """The frame at ``offset`` of an opened block, which must hold record ``seq``."""
    if offset < 0 or offset + FRAME_HEADER.size > len(raw):
        raise SegmentDamage("frame offset outside block")
    crc, n, got_seq, ts = FRAME_HEADER.unpack_from(raw, offset)
    end = offset + FRAME_HEADER.size + n
    if end > len(raw):
        raise SegmentDamage("frame overruns block")
    if zlib.crc32(memoryview(raw)[offset + 4 : end]) != crc:
        raise SegmentDamage("frame checksum mismatch")
    if got_seq != seq:
        raise SegmentDamage(f"expected seq {seq}, found {got_seq}")
    return Record(got_seq, ts, bytes(raw[offset + FRAME_HEADER.size : end]))


@dataclass(frozen=True, slots=True)
class Located:
    """A record found in a segment, with the place take() will read it back from."""

    record: Record
    block_offset: int
    frame_offset: int


@dataclass(slots=True)
class SegmentScan:
    """What a segment file holds: every record that checks out, and what was wrong."""

    found: list[Located] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: Records the file held that could not be read: a lower bound. A frame that fails its
    #: checksum, or is cut off, where the scan knows a frame starts, is one; a block header
    #: cut off, or with an unknown codec, where a block starts, is one more.
    unreadable: int = 0

    @property
    def damaged(self) -> bool:
        return bool(self.problems)


def scan_segment(buf: bytes) -> SegmentScan:
    """Recover every readable record of a segment file. Never raises.

    A bad block checksum, a truncated tail or a frame that fails its checksum is
    reported in ``problems``; frames that pass their own checksum are still returned.
    """
    scan = SegmentScan()
    if buf[: len(SEGMENT_MAGIC)] != SEGMENT_MAGIC:
        scan.problems.append("not a spool segment (bad magic)")
        return scan
    off = len(SEGMENT_MAGIC)
    if off == len(buf):
        scan.problems.append("segment holds no block")
    # Damage is counted only where the scan knows it is at a real block or frame: after a
    # checksum failure, lengths cannot be trusted until a checksum passes again.
    aligned = True
    while off < len(buf):
        if len(buf) - off < BLOCK_HEADER.size:
            # Not counted: a few bytes after the last block may be a cut header or bytes
            # appended to a whole segment, and only a real block holds a record.
            scan.problems.append(f"truncated block header at byte {off}")
            break
        crc, codec, stored, raw_len = BLOCK_HEADER.unpack_from(buf, off)
        start = off + BLOCK_HEADER.size
        payload = buf[start : start + stored]
        whole = len(payload) == stored
        # A cut-off block is counted only if its header could be one the writer made:
        # garbage after the last block must not count as records lost.
        aligned = aligned and (whole or _plausible_header(codec, stored, raw_len))
        intact = whole and zlib.crc32(payload, zlib.crc32(buf[off + 4 : start])) == crc
        if not whole:
            scan.problems.append(f"truncated block at byte {off}")
        elif not intact:
            scan.problems.append(f"block checksum mismatch at byte {off}")
        if codec == CODEC_ZLIB:
            raw = _inflate(payload, min(raw_len, stored * _MAX_INFLATE_RATIO + 64))
        elif codec == CODEC_RAW:
            raw = payload
        else:
            scan.problems.append(f"unknown codec {codec} at byte {off}")
            scan.unreadable += aligned and whole  # a whole block of a known length was there
            break
        if intact and len(raw) != raw_len:
            scan.problems.append(f"block length mismatch at byte {off}")
        _frames(raw, off, scan, aligned)
        if not whole:
            break
        # A damaged header may announce the wrong length; the next block then fails its
        # own checks, so continuing costs nothing and may save later blocks.
        off = start + stored
        aligned = intact
    return scan


#: No block the writer makes holds more raw data than this (one record over BLOCK_RAW_TARGET
#: gets a block of its own, and a record is far smaller than the spool's 16 MiB).
_MAX_BLOCK_RAW = 16 * 1024 * 1024


def _plausible_header(codec: int, stored: int, raw_len: int) -> bool:
    """Whether a block header read at the end of a segment could be the writer's: a known
    codec and lengths it could have written (random bytes pass with odds of about 1 in
    100,000)."""
    if not FRAME_HEADER.size <= raw_len <= _MAX_BLOCK_RAW:
        return False
    if codec == CODEC_RAW:
        return stored == raw_len
    return codec == CODEC_ZLIB and 0 < stored <= raw_len + raw_len // 1000 + 64


def _inflate(payload: bytes, limit: int) -> bytes:
    """Inflate as much of ``payload`` as is valid: a damaged stream yields its good prefix."""
    d = zlib.decompressobj()
    out: list[bytes] = []
    got = 0
    step = 512
    for i in range(0, len(payload), step):
        if got >= limit:
            break
        try:
            chunk = d.decompress(payload[i : i + step], limit - got)
        except zlib.error:
            break
        out.append(chunk)
        got += len(chunk)
    return b"".join(out)


def _frames(raw: bytes, block_off: int, scan: SegmentScan, aligned: bool) -> None:
    """Scan the frames of one block. ``aligned``: ``raw`` is known to start at a frame; a
    damaged frame is then counted in ``unreadable`` (until a checksum passes again, the
    offsets that follow are guesses, and what fails there is not counted)."""
    off = 0
    view = memoryview(raw)
    while off < len(raw):
        if len(raw) - off < FRAME_HEADER.size:
            scan.problems.append(f"truncated frame in block at byte {block_off}")
            scan.unreadable += aligned
            return
        crc, n, seq, ts = FRAME_HEADER.unpack_from(raw, off)
        end = off + FRAME_HEADER.size + n
        if end > len(raw):
            scan.problems.append(f"frame overruns block at byte {block_off}")
            scan.unreadable += aligned
            return
        if zlib.crc32(view[off + 4 : end]) != crc:
            # The length may be the damaged field; stepping over it is still safe
            # because every later frame must pass its own checksum.
            scan.problems.append(f"frame checksum mismatch in block at byte {block_off}")
            scan.unreadable += aligned
            aligned = False
        else:
            rec = Record(seq, ts, bytes(view[off + FRAME_HEADER.size : end]))
            scan.found.append(Located(rec, block_off, off))
            aligned = True
        off = end


@dataclass(frozen=True, slots=True)
class Tombstone:
    """Seqs acked before a clean shutdown whose segments (id <= max_segment) remain.

    ``ranges`` are inclusive, sorted and disjoint.
    """

    max_segment: int
    ranges: tuple[tuple[int, int], ...] = ()

    def covers(self, seg_id: int, seq: int) -> bool:
        if seg_id > self.max_segment or not self.ranges:
            return False
        i = bisect.bisect_right(self.ranges, (seq, 2**64)) - 1
        return i >= 0 and self.ranges[i][0] <= seq <= self.ranges[i][1]


def to_ranges(seqs: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Collapse seqs into sorted inclusive ranges."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(seqs)):
        if out and out[-1][1] + 1 == s:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return tuple(out)


def encode_tombstone(t: Tombstone) -> bytes:
    body = TOMBSTONE_MAGIC + _TOMB_HEAD.pack(t.max_segment, len(t.ranges))
    body += b"".join(_RANGE.pack(lo, hi) for lo, hi in t.ranges)
    return body + _CRC.pack(zlib.crc32(body))


def decode_tombstone(buf: bytes) -> Tombstone:
    head = len(TOMBSTONE_MAGIC) + _TOMB_HEAD.size
    if buf[: len(TOMBSTONE_MAGIC)] != TOMBSTONE_MAGIC or len(buf) < head + _CRC.size:
        raise SegmentDamage("not a spool tombstone")
    (crc,) = _CRC.unpack_from(buf, len(buf) - _CRC.size)
    if zlib.crc32(buf[: -_CRC.size]) != crc:
        raise SegmentDamage("tombstone checksum mismatch")
    max_segment, count = _TOMB_HEAD.unpack_from(buf, len(TOMBSTONE_MAGIC))
    if len(buf) != head + count * _RANGE.size + _CRC.size:
        raise SegmentDamage("tombstone length mismatch")
    ranges = tuple(_RANGE.unpack_from(buf, head + i * _RANGE.size) for i in range(count))
    return Tombstone(max_segment, ranges)
