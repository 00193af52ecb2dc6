"""Crafted malformed GGUF files: one per item of the validation checklist in docs/ARCHITECTURE.md, 'Untrusted input',
plus the shapes of real loader CVEs. Every file must be rejected by pyrt with a GGUFError
whose message names the field and the offending value (tests/test_gguf_malformed.py).

The files are generated, not committed: each case starts from the tiny valid llama model of
tests/tiny_model.py, decoded into a `Doc` (header fields, metadata entries, tensor infos and
tensor bytes), changes one thing, and serializes it again with a small writer that can
express what a well-behaved writer cannot (lengths that lie, counts that overflow, ...).

    python tests/make_malformed.py OUT_DIR      # write every case as OUT_DIR/<name>.gguf

CVE shapes (llama.cpp / ollama): CVE-2025-53630 and its bypass CVE-2026-27940 (integer
overflows in gguf_init_from_file_impl: element/byte counts and the summed padded data size
wrap, arrays/strings exhaust memory), CVE-2025-49847 (a token longer than 2^31 bytes
overflows an int32 length), CVE-2025-52566 (int32 overflow of token counts in tokenize; a
run-time input size, covered by the tokenizer fuzz target), ollama CVE-2026-7482 (tensor
offset + size past the end of the file read out of bounds).
"""
from __future__ import annotations

import copy
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tiny_model import tiny_llama_bytes  # noqa: E402

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<B",
        U64: "<Q", I64: "<q", F64: "<d"}
U64_MAX = (1 << 64) - 1


# ----------------------------------------------------------------------------------------------
# a writer that can lie
# ----------------------------------------------------------------------------------------------

@dataclass
class KV:
    key: bytes
    vtype: int
    value: Any = None
    etype: int | None = None          # arrays
    key_len: int | None = None        # override the key's length field
    raw: bytes | None = None          # override the encoded value (after the type field)


@dataclass
class TI:
    name: bytes
    shape: list[int]                  # ggml order, written as u64
    ttype: int
    data: bytes = b""
    offset: int | None = None         # relative to the data section; None: laid out in order
    n_dims: int | None = None         # override the n_dims field
    name_len: int | None = None


@dataclass
class Doc:
    kvs: list[KV]
    tensors: list[TI]
    magic: bytes = b"GGUF"
    version: int = 3
    n_tensors: int | None = None      # override the counts
    n_kv: int | None = None
    alignment: int = 32               # used for layout (general.alignment is a KV like any other)
    truncate: int | None = None       # cut the serialized file to this many bytes
    tail: bytes = b""

    def kv(self, key: str) -> KV:
        for e in self.kvs:
            if e.key == key.encode():
                return e
        raise KeyError(key)

    def set(self, key: str, vtype: int, value: Any, etype: int | None = None) -> "Doc":
        try:
            e = self.kv(key)
            e.vtype, e.value, e.etype, e.raw = vtype, value, etype, None
        except KeyError:
            self.kvs.append(KV(key.encode(), vtype, value, etype))
        return self

    def drop(self, key: str) -> "Doc":
        self.kvs = [e for e in self.kvs if e.key != key.encode()]
        return self

    def tensor(self, name: str) -> TI:
        for t in self.tensors:
            if t.name == name.encode():
                return t
        raise KeyError(name)


def _enc_str(s: bytes | str, length: int | None = None) -> bytes:
    b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
    return struct.pack("<Q", len(b) if length is None else length) + b


def _enc_value(vtype: int, value: Any, etype: int | None) -> bytes:
    if vtype == STR:
        return _enc_str(value)
    if vtype == ARR:
        out = struct.pack("<IQ", etype, len(value))
        if etype == STR:
            return out + b"".join(_enc_str(v) for v in value)
        if etype == ARR:
            return out + b"".join(struct.pack("<I", et) + _enc_value(ARR, v, et)[4:] for et, v in value)
        return out + b"".join(struct.pack(_FMT[etype], v) for v in value)
    return struct.pack(_FMT[vtype], value)


def header_size(doc: Doc) -> int:
    """Bytes before the data section (without alignment padding)."""
    n = 24
    for e in doc.kvs:
        n += len(_enc_str(e.key)) + 4
        n += len(e.raw) if e.raw is not None else len(_enc_value(e.vtype, e.value, e.etype))
    for t in doc.tensors:
        n += 8 + len(t.name) + 4 + 8 * len(t.shape) + 4 + 8
    return n


def serialize(doc: Doc) -> bytes:
    out = bytearray(doc.magic)
    out += struct.pack("<I", doc.version)
    out += struct.pack("<QQ", len(doc.tensors) if doc.n_tensors is None else doc.n_tensors,
                       len(doc.kvs) if doc.n_kv is None else doc.n_kv)
    for e in doc.kvs:
        out += _enc_str(e.key, e.key_len)
        out += struct.pack("<I", e.vtype)
        out += e.raw if e.raw is not None else _enc_value(e.vtype, e.value, e.etype)
    align = doc.alignment
    offsets, pos = [], 0
    for t in doc.tensors:
        pos = (pos + align - 1) // align * align
        offsets.append(pos if t.offset is None else t.offset)
        pos += len(t.data)
    for t, off in zip(doc.tensors, offsets):
        out += _enc_str(t.name, t.name_len)
        out += struct.pack("<I", len(t.shape) if t.n_dims is None else t.n_dims)
        out += b"".join(struct.pack("<Q", d & U64_MAX) for d in t.shape)
        out += struct.pack("<IQ", t.ttype, off & U64_MAX)
    data_start = (len(out) + align - 1) // align * align
    out += b"\0" * (data_start - len(out))
    pos = 0
    for t in doc.tensors:
        pad = (pos + align - 1) // align * align - pos
        out += b"\0" * pad + t.data
        pos += pad + len(t.data)
    out += b"\0" * ((pos + align - 1) // align * align - pos)   # as gguf.GGUFWriter does
    out += doc.tail
    if doc.truncate is not None:
        del out[doc.truncate:]
    return bytes(out)


_SEED: Doc | None = None


def seed_doc() -> Doc:
    """The tiny valid model as a Doc (a fresh deep copy each call)."""
    global _SEED
    if _SEED is None:
        from pyrt.gguf_file import GGUFFile
        data = tiny_llama_bytes()
        g = GGUFFile(data)
        kvs = [KV(k.encode(), g.metadata_types[k], v, g.array_types.get(k))
               for k, v in g.metadata.items()]
        tis = [TI(t.name.encode(), list(t.shape), t.type, bytes(data[t.offset:t.offset + t.nbytes]))
               for t in g.tensors.values()]
        g.close()
        _SEED = Doc(kvs, tis)
        assert serialize(_SEED) == data, "the writer must reproduce the seed byte for byte"
    return copy.deepcopy(_SEED)


# ----------------------------------------------------------------------------------------------
# the cases
# ----------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    item: str                          # checklist item or CVE it exercises
    build: Callable[[], bytes]
    match: str                         # regex the GGUFError message must match
    level: str = "parse"               # "parse": GGUFFile rejects; "model": Model rejects


CASES: list[Case] = []


def case(name: str, item: str, match: str, level: str = "parse"):
    def deco(fn: Callable[[Doc], Doc | bytes | None]):
        def build() -> bytes:
            d = seed_doc()
            r = fn(d)
            if isinstance(r, (bytes, bytearray)):
                return bytes(r)
            return serialize(d if r is None else r)
        CASES.append(Case(name, item, build, match, level))
        return fn
    return deco


def _patch(d: Doc, **kw) -> Doc:
    for k, v in kw.items():
        setattr(d, k, v)
    return d


# -- header ----------------------------------------------------------------------------------
case("bad_magic", "magic", r"bad magic b'GGUL'")(lambda d: _patch(d, magic=b"GGUL"))
case("ggml_magic", "magic", r"bad magic b'lmgg'")(lambda d: _patch(d, magic=b"lmgg"))
case("version_1", "version 2 or 3", r"unsupported GGUF version 1\b")(lambda d: _patch(d, version=1))
case("version_4", "version 2 or 3", r"unsupported GGUF version 4\b")(lambda d: _patch(d, version=4))
case("version_big_endian", "version 2 or 3", r"version 50331648 \(a big-endian")(
    lambda d: _patch(d, version=3 << 24))
case("tiny_file", "counts bounded by remaining bytes", r"only 20 bytes")(
    lambda d: serialize(d)[:20])
case("tensor_count_2p63", "counts bounded by remaining bytes", r"tensor_count 9223372036854775808 ")(
    lambda d: _patch(d, n_tensors=1 << 63))
case("tensor_count_past_eof", "counts bounded by remaining bytes", r"tensor_count 100000 is impossible")(
    lambda d: _patch(d, n_tensors=100000))
case("kv_count_u64_max", "counts bounded by remaining bytes", rf"metadata_kv_count {U64_MAX} ")(
    lambda d: _patch(d, n_kv=U64_MAX))
case("kv_count_past_eof", "counts bounded by remaining bytes", r"metadata_kv_count 20000 is impossible")(
    lambda d: _patch(d, n_kv=20000))
case("kv_count_too_high", "counts bounded by remaining bytes", r"tensor #0 name: string length \d+ exceeds")(
    lambda d: _patch(d, n_kv=len(d.kvs) + 1))
case("truncated_in_kv", "counts bounded by remaining bytes", r"tokenizer.ggml.tokens: array of 307 strings cannot fit")(
    lambda d: serialize(d)[:2000])


# -- strings ---------------------------------------------------------------------------------
@case("key_length_u64_max", "string lengths capped (CVE-2026-27940 string exhaustion)",
      rf"metadata key #0: string length {U64_MAX} exceeds")
def _(d):
    d.kvs[0].key_len = U64_MAX


@case("key_length_past_eof", "string lengths bounded by the file", r"metadata key #3: string length 20 runs past")
def _(d):
    head = 24 + sum(len(_enc_str(e.key)) + 4 + len(_enc_value(e.vtype, e.value, e.etype)) for e in d.kvs[:3])
    d.kvs[3].key = b"x" * 20
    d.n_kv, d.n_tensors = 4, 0
    return serialize(d)[:head + 8 + 5]


@case("value_string_u64_max", "string lengths capped", rf"general.name: string length {U64_MAX} exceeds")
def _(d):
    d.kv("general.name").raw = struct.pack("<Q", U64_MAX) + b"x"


@case("value_string_past_eof", "string lengths bounded by the file", r"general.name: string length 50000000 runs past")
def _(d):
    d.kv("general.name").raw = struct.pack("<Q", 50_000_000) + b"x"


@case("token_string_u64_max", "string lengths capped (CVE-2025-49847 shape)",
      rf"tokenizer.ggml.tokens\[5\]: string length {U64_MAX}")
def _(d):
    toks = d.kv("tokenizer.ggml.tokens").value
    raw = struct.pack("<IQ", STR, len(toks)) + b"".join(_enc_str(t) for t in toks[:5])
    d.kv("tokenizer.ggml.tokens").raw = raw + struct.pack("<Q", U64_MAX) + b"abc"


@case("token_string_2p31", "string lengths capped (CVE-2025-49847: token > INT32_MAX bytes)",
      r"tokenizer.ggml.tokens\[0\]: string length 2147483664")
def _(d):
    toks = d.kv("tokenizer.ggml.tokens").value
    d.kv("tokenizer.ggml.tokens").raw = struct.pack("<IQQ", STR, len(toks), (1 << 31) + 16) + b"x" * 64


case("empty_key", "keys well-formed", r"metadata key #2 is empty")(
    lambda d: setattr(d.kvs[2], "key", b"") or d)
case("key_with_nul", "keys well-formed", r"metadata key #1 .*NUL")(
    lambda d: setattr(d.kvs[1], "key", b"general.na\0me") or d)
case("key_not_utf8", "keys well-formed", r"metadata key #1 .*not valid UTF-8")(
    lambda d: setattr(d.kvs[1], "key", b"general.\xff\xfe") or d)
case("tensor_name_u64_max", "string lengths capped", rf"tensor #0 name: string length {U64_MAX}")(
    lambda d: setattr(d.tensors[0], "name_len", U64_MAX) or d)
case("tensor_name_empty", "tensor names well-formed", r"tensor #1 name is empty")(
    lambda d: setattr(d.tensors[1], "name", b"") or d)
case("tensor_name_nul", "tensor names well-formed", r"tensor #1 name .*NUL")(
    lambda d: setattr(d.tensors[1], "name", b"blk.0.attn_norm.weight\0evil") or d)


# -- arrays ----------------------------------------------------------------------------------
@case("array_length_2p62", "array lengths capped (CVE-2026-27940 array exhaustion)",
      r"tokenizer.ggml.token_type: array length 4611686018427387904 exceeds")
def _(d):
    d.kv("tokenizer.ggml.token_type").raw = struct.pack("<IQ", I32, 1 << 62) + b"\0" * 16


@case("array_length_past_eof", "array lengths bounded by the file",
      r"tokenizer.ggml.token_type: array of 60000000 INT32 needs 240000000 bytes")
def _(d):
    d.kv("tokenizer.ggml.token_type").raw = struct.pack("<IQ", I32, 60_000_000) + b"\0" * 16


@case("string_array_u64_max", "array lengths capped", rf"tokenizer.ggml.merges: array length {U64_MAX}")
def _(d):
    d.kv("tokenizer.ggml.merges").raw = struct.pack("<IQ", STR, U64_MAX)


@case("string_array_past_eof", "array lengths bounded by the file",
      r"tokenizer.ggml.merges: array of 50000000 strings cannot fit")
def _(d):
    d.kv("tokenizer.ggml.merges").raw = struct.pack("<IQ", STR, 50_000_000)


case("nested_array", "known KV types", r"general.tags: nested arrays are not supported")(
    lambda d: d.set("general.tags", ARR, [(U8, [1, 2])], etype=ARR))
@case("array_unknown_elem_type", "known KV types", r"general.tags: unknown array element type 13")
def _(d):
    d.kvs.append(KV(b"general.tags", ARR, raw=struct.pack("<IQ", 13, 0)))


case("value_type_13", "known KV types", r"general.name: unknown metadata value type 13")(
    lambda d: _retype(d, "general.name", 13))
case("value_type_u32_max", "known KV types", r"general.name: unknown metadata value type 4294967295")(
    lambda d: _retype(d, "general.name", 0xFFFFFFFF))


def _retype(d: Doc, key: str, vtype: int) -> Doc:
    e = d.kv(key)
    e.raw = _enc_value(e.vtype, e.value, e.etype)
    e.vtype = vtype
    return d

@case("bool_value_7", "known KV types", r"tokenizer.ggml.add_bos_token: bool value 7 is not 0 or 1")
def _(d):
    d.kv("tokenizer.ggml.add_bos_token").raw = b"\x07"


case("duplicate_key", "no duplicate keys", r"duplicate metadata key 'general.name'")(
    lambda d: d.kvs.append(KV(b"general.name", STR, "again")) or d)
case("duplicate_tensor", "no duplicate tensor names", r"duplicate tensor name 'blk.0.attn_norm.weight'")(
    lambda d: d.tensors.append(copy.deepcopy(d.tensor("blk.0.attn_norm.weight"))) or d)


# -- alignment -------------------------------------------------------------------------------
case("alignment_0", "alignment a power of two", r"general.alignment 0 is not a power of two")(
    lambda d: d.set("general.alignment", U32, 0))
case("alignment_3", "alignment a power of two", r"general.alignment 3 is not a power of two")(
    lambda d: d.set("general.alignment", U32, 3))
case("alignment_2p31", "alignment a power of two", r"general.alignment 2147483648 is not a power of two in \[1, 2\^20\]")(
    lambda d: d.set("general.alignment", U32, 1 << 31))
case("alignment_string", "alignment a power of two", r"general.alignment has type STRING")(
    lambda d: d.set("general.alignment", STR, "32"))


# -- tensor infos ----------------------------------------------------------------------------
case("n_dims_5", "1 <= n_dims <= 4", r"tensor 'token_embd.weight': n_dims 5 not in \[1, 4\]")(
    lambda d: setattr(d.tensors[0], "shape", d.tensors[0].shape + [1, 1, 1]) or d)
case("n_dims_0", "1 <= n_dims <= 4", r"tensor 'token_embd.weight': n_dims 0 not in \[1, 4\]")(
    lambda d: setattr(d.tensors[0], "shape", []) or d)
case("n_dims_u32_max", "1 <= n_dims <= 4", r"n_dims 4294967295 not in")(
    lambda d: setattr(d.tensors[0], "n_dims", 0xFFFFFFFF) or d)
case("zero_dim", "no zero dims", r"tensor 'blk.0.attn_q.weight': dimension ne\[1\] is 0")(
    lambda d: setattr(d.tensor("blk.0.attn_q.weight"), "shape", [64, 0]) or d)
case("negative_dim", "no negative dims", r"tensor 'blk.0.attn_q.weight': dimension ne\[1\] = -1 is negative")(
    lambda d: setattr(d.tensor("blk.0.attn_q.weight"), "shape", [64, -1]) or d)
case("dim_2p62", "overflow-checked counts", r"dimension ne\[0\] = 4611686018427387904 is too large")(
    lambda d: setattr(d.tensor("output_norm.weight"), "shape", [1 << 62]) or d)
case("elements_wrap_2p64", "overflow-checked element counts (CVE-2025-53630)",
     r"shape \[4294967296, 4294967296\] has 18446744073709551616 elements")(
    lambda d: setattr(d.tensor("output_norm.weight"), "shape", [1 << 32, 1 << 32]) or d)
case("bytes_wrap_2p64", "overflow-checked byte counts (padded size wraps)",
     r"shape \[2305843009213693952, 8\] has 18446744073709551616 elements")(
    lambda d: setattr(d.tensor("output_norm.weight"), "shape", [1 << 61, 8]) or d)
case("tensor_1e12_elements", "resource limits: 10^12-element tensor fails before allocating",
     r"tensor 'output_norm.weight': offset \d+ \+ 4000000000000 bytes .* past the end")(
    lambda d: setattr(d.tensor("output_norm.weight"), "shape", [1_000_000, 1_000_000]) or d)
case("unknown_type_4", "known tensor types", r"tensor 'output_norm.weight': unknown type id 4\b")(
    lambda d: setattr(d.tensor("output_norm.weight"), "ttype", 4) or d)
case("unknown_type_u32_max", "known tensor types", r"unknown type id 4294967295")(
    lambda d: setattr(d.tensor("output_norm.weight"), "ttype", 0xFFFFFFFF) or d)
case("row_not_block_multiple", "ne[0] divisible by the block size",
     r"tensor 'blk.0.attn_k.weight': row length ne\[0\] = 48 is not a multiple of the Q8_0 block size 32")(
    lambda d: setattr(d.tensor("blk.0.attn_k.weight"), "shape", [48, 32]) or d)
case("offset_unaligned", "offsets aligned", r"tensor 'blk.0.attn_k.weight': offset \d+ is not a multiple of the alignment 32")(
    lambda d: setattr(d.tensor("blk.0.attn_k.weight"), "offset", 32 * 100 + 4) or d)


@case("data_misaligned_for_type", "data aligned for its type (alignment 1)",
      r"tensor 'output_norm.weight': data at file offset \d+ is not aligned to 4 bytes as F32 requires")
def _(d):
    d.set("general.alignment", U32, 1)
    d.alignment = 1
    t = d.tensor("output_norm.weight")
    d.tensors.remove(t)
    d.tensors.append(t)
    t.offset = sum(len(x.data) for x in d.tensors[:-1]) + 2
    d.tail = b"\0" * 8
    # pad general.name so that the data section starts 4-aligned: only output_norm is off
    name = d.kv("general.name")
    name.value += " " * (-header_size(d) % 4)


case("offset_past_eof", "byte range inside the file (ollama CVE-2026-7482)",
     r"tensor 'output.weight': offset 1073741824 \+ \d+ bytes .* past the end of the file")(
    lambda d: setattr(d.tensor("output.weight"), "offset", 1 << 30) or d)
case("size_past_eof", "byte range inside the file (ollama CVE-2026-7482)",
     r"tensor 'output.weight': offset \d+ \+ 43520 bytes .* past the end of the file")(
    lambda d: setattr(d.tensor("output.weight"), "shape", [64, 640]) or d)
case("offset_wraps", "byte range inside the file (offset + size wraps in C)",
     r"offset 18446744073709551584 \+ \d+ bytes .* past the end")(
    lambda d: setattr(d.tensor("output.weight"), "offset", U64_MAX - 31) or d)
case("overlapping_tensors", "no overlapping tensors",
     r"tensors 'blk.0.attn_q.weight' \(bytes \[\d+, \d+\)\) and 'blk.0.attn_k.weight' .* overlap")(
    lambda d: setattr(d.tensor("blk.0.attn_k.weight"), "offset", _offset_of(d, "blk.0.attn_q.weight") + 32) or d)


def _offset_of(d: Doc, name: str) -> int:
    pos = 0
    for t in d.tensors:
        pos = (pos + d.alignment - 1) // d.alignment * d.alignment
        if t.name == name.encode():
            return pos
        pos += len(t.data)
    raise KeyError(name)


case("truncated_tensor_data", "byte range inside the file", r"tensor 'output.weight': .* past the end of the file")(
    lambda d: _patch(d, truncate=len(serialize(d)) - 100))
case("truncated_tensor_infos", "counts bounded by remaining bytes", r"truncated file: tensor .* needs|tensor_count \d+ is impossible")(
    lambda d: serialize(d)[:_header_end(d) - 10])


def _header_end(d: Doc) -> int:
    from pyrt.gguf_file import GGUFFile
    return GGUFFile(serialize(d)).data_offset


# -- vocabulary (checked by pyrt.model.read_hparams) -----------------------------------------
case("tokens_wrong_elem_type", "vocabulary arrays of the expected element types",
     r"'tokenizer.ggml.tokens' has type ARRAY of INT32, expected an array of strings", "model")(
    lambda d: d.set("tokenizer.ggml.tokens", ARR, list(range(307)), etype=I32))
case("tokens_not_array", "vocabulary arrays of the expected element types",
     r"'tokenizer.ggml.tokens' has type STRING, expected an array of strings", "model")(
    lambda d: d.set("tokenizer.ggml.tokens", STR, "abc"))
case("token_type_float", "vocabulary arrays of the expected element types",
     r"'tokenizer.ggml.token_type' has type ARRAY of FLOAT32, expected an array of INT32", "model")(
    lambda d: d.set("tokenizer.ggml.token_type", ARR, [float("inf")] * 307, etype=F32))
case("token_type_value_99", "vocabulary arrays of the expected element types",
     r"tokenizer.ggml.token_type\[7\] = 99 is not a token type", "model")(
    lambda d: d.kv("tokenizer.ggml.token_type").value.__setitem__(7, 99) or d)
case("token_type_short", "vocabulary arrays of the expected element types",
     r"tokenizer.ggml.token_type has 306 entries for 307 tokens", "model")(
    lambda d: d.kv("tokenizer.ggml.token_type").value.pop() and d)
case("byte_token_bad_text", "vocabulary arrays of the expected element types",
     r"tokenizer.ggml.tokens\[65\] = 'A' has type BYTE but is not of the form <0xXX>", "model")(
    lambda d: d.kv("tokenizer.ggml.token_type").value.__setitem__(65, 6) or d)
case("scores_wrong_type", "vocabulary arrays of the expected element types",
     r"'tokenizer.ggml.scores' has type ARRAY of STRING", "model")(
    lambda d: d.set("tokenizer.ggml.scores", ARR, ["x"] * 307, etype=STR))
case("merges_wrong_type", "vocabulary arrays of the expected element types",
     r"'tokenizer.ggml.merges' has type ARRAY of UINT8, expected an array of strings", "model")(
    lambda d: d.set("tokenizer.ggml.merges", ARR, [1, 2, 3], etype=U8))
case("vocab_size_mismatch", "hparams consistent with tensor shapes",
     r"tokenizer.ggml.tokens has 306 entries but token_embd.weight has 307 rows", "model")(
    lambda d: d.kv("tokenizer.ggml.tokens").value.pop() and d)
case("missing_tokens", "vocabulary present", r"missing required metadata 'tokenizer.ggml.tokens'", "model")(
    lambda d: d.drop("tokenizer.ggml.tokens"))
case("duplicate_token", "vocabulary arrays well-formed",
     r"tokenizer.ggml.tokens\[300\] = 'Ġt' duplicates tokenizer.ggml.tokens\[\d+\]", "model")(
    lambda d: d.kv("tokenizer.ggml.tokens").value.__setitem__(300, "Ġt") or d)
case("missing_tokenizer_model", "vocabulary present", r"missing required metadata 'tokenizer.ggml.model'", "model")(
    lambda d: d.drop("tokenizer.ggml.model"))
case("missing_merges", "vocabulary present", r"missing required metadata 'tokenizer.ggml.merges'", "model")(
    lambda d: d.drop("tokenizer.ggml.merges"))
case("bos_id_eq_n_vocab", "special token ids < n_vocab",
     r"'tokenizer.ggml.bos_token_id' = 307 is not a token id \(vocabulary of 307\)", "model")(
    lambda d: d.set("tokenizer.ggml.bos_token_id", U32, 307))
case("eos_id_u32_max", "special token ids < n_vocab",
     r"'tokenizer.ggml.eos_token_id' = 4294967295 is not a token id", "model")(
    lambda d: d.set("tokenizer.ggml.eos_token_id", U32, 0xFFFFFFFF))
case("pad_id_negative", "special token ids < n_vocab",
     r"'tokenizer.ggml.padding_token_id' = -1 is not a token id", "model")(
    lambda d: d.set("tokenizer.ggml.padding_token_id", I32, -1))
case("eot_id_string", "special token ids < n_vocab",
     r"'tokenizer.ggml.eot_token_id' has type STRING, expected an integer", "model")(
    lambda d: d.set("tokenizer.ggml.eot_token_id", STR, "5"))
case("add_bos_string", "vocabulary metadata of the expected types",
     r"'tokenizer.ggml.add_bos_token' has type STRING, expected BOOL", "model")(
    lambda d: d.set("tokenizer.ggml.add_bos_token", STR, "false"))


# -- hyper-parameters (pyrt.model.read_hparams) and tensor shapes (Model._bind) ---------------
case("arch_unknown", "hparams in sane ranges", r"unsupported architecture 'gptj'", "model")(
    lambda d: d.set("general.architecture", STR, "gptj"))
case("arch_int", "hparams in sane ranges", r"'general.architecture' has type int", "model")(
    lambda d: d.set("general.architecture", U32, 1))
case("n_embd_0", "hparams in sane ranges", r"'llama.embedding_length' = 0 is outside \[1, 65536\]", "model")(
    lambda d: d.set("llama.embedding_length", U32, 0))
case("n_embd_2p31", "hparams in sane ranges (absurd)", r"'llama.embedding_length' = 2147483648 is outside", "model")(
    lambda d: d.set("llama.embedding_length", U64, 1 << 31))
case("n_head_0", "hparams in sane ranges", r"'llama.attention.head_count' = 0 is outside", "model")(
    lambda d: d.set("llama.attention.head_count", U32, 0))
case("n_head_kv_not_divisor", "hparams in sane ranges", r"head_count_kv = 3 does not divide head_count 4", "model")(
    lambda d: d.set("llama.attention.head_count_kv", U32, 3))
case("n_layer_1e6", "hparams in sane ranges (absurd)", r"'llama.block_count' = 1000000 is outside \[1, 1024\]", "model")(
    lambda d: d.set("llama.block_count", U32, 1_000_000))
case("n_ctx_2p40", "hparams in sane ranges (context that cannot fit)",
     r"'llama.context_length' = 1099511627776 is outside \[1, 16777216\]", "model")(
    lambda d: d.set("llama.context_length", U64, 1 << 40))
case("rms_eps_nan", "hparams in sane ranges", r"'llama.attention.layer_norm_rms_epsilon' = nan is outside", "model")(
    lambda d: d.set("llama.attention.layer_norm_rms_epsilon", F32, float("nan")))
case("rope_base_negative", "hparams in sane ranges", r"'llama.rope.freq_base' = -1.0 is outside", "model")(
    lambda d: d.set("llama.rope.freq_base", F32, -1.0))
case("rope_base_inf", "hparams in sane ranges", r"'llama.rope.freq_base' = inf is outside", "model")(
    lambda d: d.set("llama.rope.freq_base", F32, float("inf")))
case("rope_dim_odd", "hparams in sane ranges", r"odd rope dimension \(llama.rope.dimension_count = 15\)", "model")(
    lambda d: d.set("llama.rope.dimension_count", U32, 15))
case("head_dim_2000", "hparams in sane ranges", r"'llama.attention.key_length' = 2000 is outside", "model")(
    lambda d: d.set("llama.attention.key_length", U32, 2000))
case("n_ff_mismatch", "hparams consistent with tensor shapes",
     r"tensor 'blk.0.ffn_gate.weight' has shape \[64, 128\], .*n_ff=256.* imply \[64, 256\]", "model")(
    lambda d: d.set("llama.feed_forward_length", U32, 256))
case("n_embd_mismatch", "hparams consistent with tensor shapes",
     r"token_embd.weight rows have 64 elements but llama.embedding_length is 32", "model")(
    lambda d: d.set("llama.embedding_length", U32, 32).set("llama.rope.dimension_count", U32, 8))
case("n_head_kv_mismatch", "hparams consistent with tensor shapes",
     r"tensor 'blk.0.attn_k.weight' has shape \[64, 32\], .*imply \[64, 64\]", "model")(
    lambda d: d.set("llama.attention.head_count_kv", U32, 4))
case("n_layer_too_many", "hparams consistent with tensor shapes", r"missing tensor 'blk.2.attn_norm.weight'", "model")(
    lambda d: d.set("llama.block_count", U32, 3))
case("n_layer_too_few", "hparams consistent with tensor shapes",
     r"tensor 'blk.1.attn_norm.weight' belongs to layer 1 but llama.block_count is 1", "model")(
    lambda d: d.set("llama.block_count", U32, 1))
case("missing_output_norm", "hparams consistent with tensor shapes", r"missing tensor 'output_norm.weight'", "model")(
    lambda d: setattr(d, "tensors", [t for t in d.tensors if t.name != b"output_norm.weight"]) or d)
case("extra_tensor", "hparams consistent with tensor shapes", r"tensor 'evil.weight' is not used by the 'llama' architecture", "model")(
    lambda d: d.tensors.append(TI(b"evil.weight", [8], 0, b"\0" * 32)) or d)
case("embd_1d", "hparams consistent with tensor shapes", r"token_embd.weight has shape \[19648\], expected \[64, n_vocab\]", "model")(
    lambda d: setattr(d.tensors[0], "shape", [64 * 307]) or d)
case("embd_3d", "hparams consistent with tensor shapes", r"token_embd.weight has shape \[64, 307, 2\]", "model")(
    lambda d: _embd_3d(d))


def _embd_3d(d: Doc) -> Doc:
    t = d.tensors[0]
    t.shape = [64, 307, 2]
    t.data = t.data * 2
    return d


CASE_NAMES = [c.name for c in CASES]
assert len(set(CASE_NAMES)) == len(CASE_NAMES), "duplicate case names"


def write_all(out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for c in CASES:
        p = out / f"{c.name}.gguf"
        p.write_bytes(c.build())
        paths.append(p)
    return paths


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "malformed"
    for p, c in zip(write_all(target), CASES):
        print(f"{p}  [{c.item}]")
    print(f"{len(CASES)} files")
