"""A hand-written protobuf encoder for sentencepiece's ``ModelProto``.

Just enough of the protobuf wire format (varints, length-delimited and fixed32 fields) for
``spm.SPMTokenizer`` to build the model proto it hands to the ``sentencepiece`` library from a
GGUF vocabulary, without a protobuf dependency. ``_pb_pieces`` writes the repeated pieces field
for a whole vocabulary at once with numpy.
"""
from __future__ import annotations

import struct

import numpy as np

_PB_NORMAL, _PB_UNKNOWN, _PB_BYTE = 1, 2, 6     # sentencepiece ModelProto.SentencePiece.Type


def _pb_varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _pb_field(num: int, value: bytes | int | float) -> bytes:
    """One protobuf field: bytes (length-delimited), int (varint) or float (fixed32)."""
    if isinstance(value, bytes):
        return _pb_varint(num << 3 | 2) + _pb_varint(len(value)) + value
    if isinstance(value, float):
        return _pb_varint(num << 3 | 5) + struct.pack("<f", value)
    return _pb_varint(num << 3) + _pb_varint(int(value))


def _varint_len(x: np.ndarray) -> np.ndarray:
    """Bytes of the protobuf varint of each (non-negative int64) value."""
    n = np.ones(x.shape, np.int64)
    for k in range(1, 10):
        n += x >= (1 << (7 * k))
    return n


def _put_varints(out: np.ndarray, pos: np.ndarray, x: np.ndarray, xlen: np.ndarray) -> None:
    """Write the varint of each ``x`` (``xlen`` bytes) into ``out`` at ``pos``."""
    for k in range(int(xlen.max(initial=0))):
        sel = np.flatnonzero(xlen > k)
        out[pos[sel] + k] = ((x[sel] >> (7 * k)) & 0x7F) | ((xlen[sel] > k + 1) << 7)


def _utf8_concat(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 (surrogatepass) bytes of all texts back to back, and each one's length."""
    n = len(texts)
    joined = "\0".join(texts)
    if joined.count("\0") == n - 1:       # no text holds a NUL: one encode, split at the NULs
        data = np.frombuffer(joined.encode("utf-8", "surrogatepass"), np.uint8)
        nul = data == 0
        bounds = np.concatenate(([-1], np.flatnonzero(nul), [data.size]))
        return data[~nul], np.diff(bounds) - 1
    enc = [t.encode("utf-8", "surrogatepass") for t in texts]
    return np.frombuffer(b"".join(enc), np.uint8), np.fromiter(map(len, enc), np.int64, n)


def _pb_pieces(texts: list[str], scores: np.ndarray, types: np.ndarray) -> bytes:
    """The repeated ``ModelProto.pieces`` field, one ``SentencePiece {1: piece, 2: score,
    3: type}`` per text: what ``_pb_field`` would give piece by piece, built with numpy
    (a 262k-token vocabulary in milliseconds). ``scores`` float32, ``types`` < 128."""
    n = len(texts)
    data, tlen = _utf8_concat(texts)
    tlen_len = _varint_len(tlen)
    inner = 1 + tlen_len + tlen + 5 + 2      # tag+len+text, tag+fixed32 score, tag+type
    inner_len = _varint_len(inner)
    rec = 1 + inner_len + inner
    start = np.zeros(n, np.int64)
    np.cumsum(rec[:-1], out=start[1:])
    total = int(rec.sum())
    out = np.zeros(total, np.uint8)
    out[start] = 1 << 3 | 2                  # ModelProto.pieces, length-delimited
    _put_varints(out, start + 1, inner, inner_len)
    p = start + 1 + inner_len
    out[p] = 1 << 3 | 2                      # SentencePiece.piece
    _put_varints(out, p + 1, tlen, tlen_len)
    t = p + 1 + tlen_len                     # text bytes: [t, e)
    e = t + tlen
    run = np.zeros(total + 1, np.int8)
    run[t] = 1
    run[e] -= 1
    out[np.cumsum(run[:-1], dtype=np.int8).view(np.bool_)] = data
    out[e] = 2 << 3 | 5                      # SentencePiece.score, fixed32
    score_bytes = np.ascontiguousarray(scores, dtype="<f4").view(np.uint8).reshape(n, 4)
    for k in range(4):
        out[e + 1 + k] = score_bytes[:, k]
    out[e + 5] = 3 << 3                      # SentencePiece.type, varint
    out[e + 6] = types
    return out.tobytes()

