"""Open and validate a GGUF file over mmap, zero-copy.

A GGUF file from the internet is hostile until validated: every count, length,
type id, shape and byte range is checked here before any pointer is handed to
C (docs/ARCHITECTURE.md, 'Untrusted input'). Errors are `GGUFError` (a
`ValueError`) naming the field and the offending value.

Checks, in file order (each one a GGUFError):

- magic ``GGUF``; version 2 or 3 (a byte-swapped version means a big-endian file);
- tensor and metadata counts bounded by the bytes left in the file (and by
  MAX_TENSORS / MAX_KV);
- every string length and array length capped (MAX_STRING, MAX_ARRAY) and bounded
  by the bytes left; keys and tensor names non-empty UTF-8 without NUL;
- known metadata value types; known array element types (no nested arrays);
  bools 0 or 1; no duplicate keys or tensor names;
- ``general.alignment`` an integer power of two in [1, 2^20];
- per tensor: 1 <= n_dims <= 4; every dim in [1, 2^62); element count <= 2^40
  (products computed on Python ints, so nothing wraps); known ggml type with a
  block size; ne[0] a multiple of the block size; offset aligned to the file's
  alignment and the data aligned for its element type; byte range inside the
  file; no two tensors overlapping.

Hyper-parameters, vocabulary arrays and tensor shapes against the
architecture are checked one level up (pyrt.model.read_hparams / Model._bind).

We parse the header ourselves instead of using `gguf.GGUFReader`: the reader
takes ~1.9 s on SmolLM2's 49k-token vocabulary (it builds a numpy view per
array element), while this parser takes a few tens of milliseconds. The `gguf`
package still provides the type constants and block sizes.
"""
from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

GGUF_MAGIC = b"GGUF"
MAX_STRING = 64 << 20          # one metadata string (chat templates can be big)
MAX_ARRAY = 1 << 26            # elements in one metadata array
MAX_KV = 1 << 16               # metadata entries
MAX_TENSORS = 1 << 20
MAX_NAME = 1024                # key / tensor name length
MAX_DIM = 1 << 62              # one dimension (ggml stores int64)
MAX_ELEMENTS = 1 << 40         # elements in one tensor
MAX_ALIGNMENT = 1 << 20

# GGUF metadata value types
_U8, _I8, _U16, _I16, _U32, _I32, _F32, _BOOL, _STR, _ARR, _U64, _I64, _F64 = range(13)
VALUE_TYPE_NAMES = ("UINT8", "INT8", "UINT16", "INT16", "UINT32", "INT32", "FLOAT32", "BOOL",
                    "STRING", "ARRAY", "UINT64", "INT64", "FLOAT64")
INT_TYPES = frozenset((_U8, _I8, _U16, _I16, _U32, _I32, _U64, _I64))
FLOAT_TYPES = frozenset((_F32, _F64))
_SCALAR = {
    _U8: ("<B", 1), _I8: ("<b", 1), _U16: ("<H", 2), _I16: ("<h", 2),
    _U32: ("<I", 4), _I32: ("<i", 4), _F32: ("<f", 4), _BOOL: ("<B", 1),
    _U64: ("<Q", 8), _I64: ("<q", 8), _F64: ("<d", 8),
}
_NP = {_U8: "<u1", _I8: "<i1", _U16: "<u2", _I16: "<i2", _U32: "<u4", _I32: "<i4",
       _F32: "<f4", _BOOL: "<u1", _U64: "<u8", _I64: "<i8", _F64: "<f8"}
# smallest encoding of one metadata entry (key len + 1-byte key + type + 1-byte value)
# and of one tensor info (name len + 1-byte name + n_dims + one dim + type + offset)
_MIN_KV_BYTES = 8 + 1 + 4 + 1
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8

# Block geometry (weights, bytes) per ggml type. gguf-py 0.19 lists Q8_1 as 40 bytes per
# block; ggml's block_q8_1 (two fp16 + 32 int8, static_assert in ggml-common.h) is 36, which
# is what llama.cpp and our C core use.
BLOCK_SIZES = {**GGML_QUANT_SIZES, GGMLQuantizationType.Q8_1: (32, 36)}

# Alignment C needs for a tensor's first byte: the widest scalar its blocks hold
# (fp16 d/m in quant blocks; f32 d in Q8_K; plain f32/i32/f64/i64 tensors).
_ELEMENT_ALIGN = {
    GGMLQuantizationType.F32: 4, GGMLQuantizationType.I32: 4, GGMLQuantizationType.Q8_K: 4,
    GGMLQuantizationType.F64: 8, GGMLQuantizationType.I64: 8, GGMLQuantizationType.I8: 1,
}


class GGUFError(ValueError):
    """A malformed, unsupported or inconsistent GGUF file."""


def type_name(t: int) -> str:
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return f"type#{t}"


def value_type_name(t: int) -> str:
    return VALUE_TYPE_NAMES[t] if 0 <= t < len(VALUE_TYPE_NAMES) else f"type#{t}"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type: int                 # ggml type id
    shape: tuple[int, ...]    # ggml order: shape[0] is the row length
    offset: int               # absolute byte offset in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        return type_name(self.type)

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _decode_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # keep it lossless: some vocabularies hold raw byte tokens
        return raw.decode("utf-8", "surrogateescape")


def _encode_text(text: str) -> bytes:
    """The bytes _decode_text decoded `text` from (surrogateescape makes the round trip exact)."""
    return text.encode("utf-8", "surrogateescape")


_U64_LE = struct.Struct("<Q")


class _Cursor:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf, pos: int = 0):
        self.buf = buf
        self.pos = pos
        self.end = len(buf)

    @property
    def left(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.end:
            raise GGUFError(f"truncated file: {what} needs {n} bytes at offset {self.pos}, "
                            f"only {max(self.end - self.pos, 0)} left (file size {self.end})")

    def unpack(self, fmt: str, size: int, what: str):
        self.need(size, what)
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return v

    def u32(self, what: str) -> int:
        return self.unpack("<I", 4, what)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", 8, what)

    def raw_string(self, what: str, limit: int) -> bytes:
        n = self.u64(f"{what} length")
        if n > limit:
            raise GGUFError(f"{what}: string length {n} exceeds the limit {limit}")
        if n > self.left:
            raise GGUFError(f"{what}: string length {n} runs past the end of the file "
                            f"({self.left} bytes left at offset {self.pos})")
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw

    def string(self, what: str, limit: int = MAX_STRING) -> str:
        return _decode_text(self.raw_string(what, limit))

    def name(self, what: str) -> str:
        """A key or tensor name: non-empty UTF-8 without NUL (C sees it as a C string)."""
        raw = self.raw_string(what, MAX_NAME)
        if not raw:
            raise GGUFError(f"{what} is empty")
        if b"\0" in raw:
            raise GGUFError(f"{what} {raw!r} contains a NUL byte")
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{what} {raw!r} is not valid UTF-8") from None


class GGUFFile:
    """A parsed, validated GGUF file kept open over a read-only mmap.

    `source` is a path, or a bytes-like object (bytes, bytearray, memoryview,
    mmap) holding a whole file, which is then used in place (fuzzers, tests).
    `metadata` maps keys, in file order, to int/float/bool/str or lists of them
    (strings decoded losslessly: invalid UTF-8 as surrogate escapes);
    `metadata_types` maps keys to GGUF value type ids and `array_types` maps
    array-valued keys to their element type ids; `raw_metadata(key)` gives a
    value with its strings as the bytes in the file; `tensors` maps names, in
    file order, to `TensorInfo`; `tensor_data(name)` is a zero-copy uint8 view.
    """

    def __init__(self, source):
        self._fh = None
        self._mm = None
        if isinstance(source, (bytes, bytearray, memoryview, mmap.mmap)):
            self.path = "<memory>"
            self._mm = memoryview(source).cast("B") if not isinstance(source, mmap.mmap) else source
            if len(self._mm) < 24:
                raise GGUFError(f"not a GGUF file (only {len(self._mm)} bytes)")
            self._parse()
            return
        self.path = os.fspath(source)
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise FileNotFoundError(f"cannot open model file {self.path!r}: {e.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise GGUFError(f"{self.path}: not a regular file")
        try:
            self._fh = open(self.path, "rb")
        except OSError as e:
            raise FileNotFoundError(f"cannot open model file {self.path!r}: {e.strerror}") from None
        try:
            size = os.fstat(self._fh.fileno()).st_size
            if size < 24:
                raise GGUFError(f"{self.path}: not a GGUF file (only {size} bytes)")
            self._mm = mmap.mmap(self._fh.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse()
        except BaseException:
            self.close()
            raise

    # ---- parsing ---------------------------------------------------------------

    def _parse(self) -> None:
        cur = _Cursor(self._mm)
        magic = bytes(self._mm[:4])
        if magic != GGUF_MAGIC:
            raise GGUFError(f"{self.path}: bad magic {magic!r}, expected b'GGUF'")
        cur.pos = 4
        self.version = cur.u32("version")
        if self.version not in (2, 3):
            hint = " (a big-endian file?)" if self.version in (2 << 24, 3 << 24) else ""
            raise GGUFError(f"unsupported GGUF version {self.version}{hint} (supported: 2, 3)")
        n_tensors = cur.u64("tensor_count")
        n_kv = cur.u64("metadata_kv_count")
        if n_tensors > MAX_TENSORS or n_tensors * _MIN_TENSOR_INFO_BYTES > cur.left:
            raise GGUFError(f"tensor_count {n_tensors} is impossible: {cur.left} bytes are left "
                            f"in the file (limit {MAX_TENSORS})")
        if n_kv > MAX_KV or n_kv * _MIN_KV_BYTES + n_tensors * _MIN_TENSOR_INFO_BYTES > cur.left:
            raise GGUFError(f"metadata_kv_count {n_kv} is impossible: {cur.left} bytes are left "
                            f"in the file (limit {MAX_KV})")

        meta: dict[str, Any] = {}
        self.metadata_types: dict[str, int] = {}
        self.array_types: dict[str, int] = {}
        for i in range(n_kv):
            key = cur.name(f"metadata key #{i}")
            if key in meta:
                raise GGUFError(f"duplicate metadata key {key!r}")
            vtype = cur.u32(f"type of {key!r}")
            meta[key] = self._value(cur, vtype, key)
            self.metadata_types[key] = vtype
        self.metadata = meta

        align = meta.get("general.alignment", 32)
        key_type = self.metadata_types.get("general.alignment")
        if key_type is not None and key_type not in INT_TYPES:
            raise GGUFError(f"general.alignment has type {value_type_name(key_type)}, "
                            f"expected an integer")
        if not isinstance(align, int) or isinstance(align, bool) or align <= 0 \
                or align & (align - 1) or align > MAX_ALIGNMENT:
            raise GGUFError(f"general.alignment {align!r} is not a power of two in [1, 2^20]")
        self.alignment = align

        infos = []
        names = set()
        for i in range(n_tensors):
            name = cur.name(f"tensor #{i} name")
            if name in names:
                raise GGUFError(f"duplicate tensor name {name!r}")
            names.add(name)
            n_dims = cur.u32(f"tensor {name!r}: n_dims")
            if not 1 <= n_dims <= 4:
                raise GGUFError(f"tensor {name!r}: n_dims {n_dims} not in [1, 4]")
            shape = tuple(cur.u64(f"tensor {name!r}: ne[{d}]") for d in range(n_dims))
            ttype = cur.u32(f"tensor {name!r}: type")
            offset = cur.u64(f"tensor {name!r}: offset")
            infos.append((name, shape, ttype, offset))

        data_start = (cur.pos + align - 1) // align * align
        self.data_offset = data_start
        tensors: dict[str, TensorInfo] = {}
        spans = []
        for name, shape, ttype, offset in infos:
            for d, n in enumerate(shape):
                if n == 0:
                    raise GGUFError(f"tensor {name!r}: dimension ne[{d}] is 0")
                if n >= 1 << 63:
                    raise GGUFError(f"tensor {name!r}: dimension ne[{d}] = {n - (1 << 64)} is negative")
                if n >= MAX_DIM:
                    raise GGUFError(f"tensor {name!r}: dimension ne[{d}] = {n} is too large")
            n_el = 1
            for n in shape:
                n_el *= n
            if n_el > MAX_ELEMENTS:
                raise GGUFError(f"tensor {name!r}: shape {list(shape)} has {n_el} elements, "
                                f"more than the limit 2^40")
            try:
                qt = GGMLQuantizationType(ttype)
            except ValueError:
                raise GGUFError(f"tensor {name!r}: unknown type id {ttype}") from None
            if qt not in BLOCK_SIZES:
                raise GGUFError(f"tensor {name!r}: type {qt.name} has no known block size")
            block, bsize = BLOCK_SIZES[qt]
            if shape[0] % block:
                raise GGUFError(f"tensor {name!r}: row length ne[0] = {shape[0]} is not a multiple "
                                f"of the {qt.name} block size {block}")
            nbytes = n_el // block * bsize
            if offset % align:
                raise GGUFError(f"tensor {name!r}: offset {offset} is not a multiple of the "
                                f"alignment {align}")
            start = data_start + offset
            if start % _ELEMENT_ALIGN.get(qt, 2):
                raise GGUFError(f"tensor {name!r}: data at file offset {start} is not aligned to "
                                f"{_ELEMENT_ALIGN.get(qt, 2)} bytes as {qt.name} requires")
            if start + nbytes > cur.end:
                raise GGUFError(f"tensor {name!r}: offset {offset} + {nbytes} bytes = file bytes "
                                f"[{start}, {start + nbytes}) lie past the end of the file "
                                f"({cur.end} bytes)")
            tensors[name] = TensorInfo(name, int(ttype), shape, start, nbytes)
            spans.append((start, start + nbytes, name))
        spans.sort()
        for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
            if s1 < e0:
                raise GGUFError(f"tensors {n0!r} (bytes [{s0}, {e0})) and {n1!r} "
                                f"(bytes [{s1}, {e1})) overlap in the file")
        self.tensors = tensors

    def _value(self, cur: _Cursor, vtype: int, key: str):
        if vtype in _SCALAR:
            fmt, size = _SCALAR[vtype]
            v = cur.unpack(fmt, size, key)
            if vtype == _BOOL:
                if v > 1:
                    raise GGUFError(f"{key}: bool value {v} is not 0 or 1")
                return bool(v)
            return v
        if vtype == _STR:
            return cur.string(key)
        if vtype == _ARR:
            etype = cur.u32(f"{key}: array element type")
            n = cur.u64(f"{key}: array length")
            if n > MAX_ARRAY:
                raise GGUFError(f"{key}: array length {n} exceeds the limit {MAX_ARRAY}")
            self.array_types[key] = etype
            if etype in _SCALAR:
                size = _SCALAR[etype][1]
                if n * size > cur.left:
                    raise GGUFError(f"{key}: array of {n} {value_type_name(etype)} needs {n * size} "
                                    f"bytes, only {cur.left} left in the file")
                arr = np.frombuffer(self._mm, dtype=_NP[etype], count=n, offset=cur.pos)
                cur.pos += n * size
                if etype == _BOOL:
                    if n and int(arr.max()) > 1:
                        raise GGUFError(f"{key}: bool array holds the value {int(arr.max())}, not 0 or 1")
                    return [bool(x) for x in arr]
                return arr.tolist()
            if etype == _STR:
                if n * 8 > cur.left:
                    raise GGUFError(f"{key}: array of {n} strings cannot fit in the "
                                    f"{cur.left} bytes left in the file")
                return self._string_array(cur, n, key)
            if etype == _ARR:
                raise GGUFError(f"{key}: nested arrays are not supported")
            raise GGUFError(f"{key}: unknown array element type {etype}")
        raise GGUFError(f"{key}: unknown metadata value type {vtype}")

    @staticmethod
    def _string_array(cur: _Cursor, n: int, key: str) -> list[str]:
        buf, pos, end = cur.buf, cur.pos, cur.end
        unpack = _U64_LE.unpack_from
        raws = []
        append = raws.append
        for i in range(n):
            if pos + 8 > end:
                raise GGUFError(f"truncated file: {key}[{i}] length at offset {pos}")
            (ln,) = unpack(buf, pos)
            pos += 8
            if ln > MAX_STRING or ln > end - pos:
                raise GGUFError(f"{key}[{i}]: string length {ln} runs past the end of the file "
                                f"or exceeds the limit {MAX_STRING}")
            append(buf[pos:pos + ln])
            pos += ln
        cur.pos = pos
        # Fast path (one decode for the whole array): valid UTF-8 without NUL bytes, so that
        # splitting the NUL-joined text gives back exactly the n strings.
        try:
            out = b"\0".join(raws).decode("utf-8").split("\0")
        except UnicodeDecodeError:
            out = None
        if out is not None and len(out) == n:
            return out
        return [_decode_text(bytes(raw)) for raw in raws]

    # ---- access ---------------------------------------------------------------

    def tensor_data(self, name: str) -> np.ndarray:
        """Zero-copy read-only uint8 view of a tensor's bytes."""
        t = self.tensors[name]
        return np.frombuffer(self._mm, dtype=np.uint8, count=t.nbytes, offset=t.offset)

    def raw_metadata(self, key: str) -> Any:
        """metadata[key] with its strings (a string value, or each element of a string
        array) as the bytes stored in the file, for copying a KV pair exactly."""
        v = self.metadata[key]
        vtype = self.metadata_types[key]
        if vtype == _STR:
            return _encode_text(v)
        if vtype == _ARR and self.array_types[key] == _STR:
            return [_encode_text(x) for x in v]
        return v

    def get(self, key: str, default: Any = None, types: tuple = ()) -> Any:
        """Metadata value with an optional type check (bool is not an int here)."""
        if key not in self.metadata:
            return default
        v = self.metadata[key]
        if types and (not isinstance(v, types) or (isinstance(v, bool) and bool not in types)):
            raise GGUFError(f"metadata {key!r} has type {type(v).__name__}, expected "
                            + " or ".join(t.__name__ for t in types))
        return v

    @property
    def buffer(self):
        return self._mm

    @property
    def size(self) -> int:
        return len(self._mm) if getattr(self, "_mm", None) is not None else 0

    def close(self) -> None:
        mm = getattr(self, "_mm", None)
        if mm is not None:
            if isinstance(mm, mmap.mmap) and getattr(self, "_fh", None) is not None:
                try:
                    mm.close()
                except BufferError:
                    pass  # a numpy view is still alive; the mapping goes with it
            elif isinstance(mm, memoryview):
                try:
                    mm.release()
                except BufferError:
                    pass
            self._mm = None
        fh = getattr(self, "_fh", None)
        if fh is not None:
            fh.close()
            self._fh = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
