"""`pyrt quantize IN.gguf OUT.gguf --type q8_0|q4_0|q4_1|f16`: requantize a GGUF model file.

Reads with gguf.GGUFReader (mmap), writes with gguf.GGUFWriter, one tensor at a time: the tensor
table is registered first (GGUFWriter.add_tensor_info), then each tensor's data is produced and
written (write_tensor_data) before the next one is read, so peak memory is about one tensor.

Per-tensor types follow llama.cpp's llama-quantize (src/llama-quant.cpp, as vendored in
llama-cpp-python 0.3.36), restricted to the targets pyrt offers:
  - only tensors with >= 2 dims whose name ends in "weight" are converted, minus a few that
    llama.cpp never quantizes (norms, MoE router, positional embeddings, ...); the rest
    (1-D norms etc.) are copied byte for byte;
  - the output tensor -- output.weight, or token_embd.weight when there is no output.weight
    (tied embeddings) -- gets Q6_K for the quantized targets (Q8_0 stays Q8_0); Q6_K needs
    ne0 % 256 == 0 and otherwise falls back to Q8_0, as llama.cpp does (SmolLM2: ne0 = 576).
    pyrt cannot write Q6_K yet, so where llama.cpp would keep Q6_K pyrt writes Q8_0 and says so;
  - a tensor whose ne0 is not a multiple of the target's block size (32) becomes F16;
  - f16 target: every convertible tensor becomes F16 (no special output rule);
  - a tensor already of its target type is copied unchanged (no requantization round trip).
Numerics: dequantize to f32, then quantize, both with gguf.quants, which implements ggml's
reference rounding, so Q8_0/Q4_0/Q4_1 blocks are byte-identical to llama-quantize's.
KV pairs are copied in order with their exact types (string arrays as raw bytes); split keys are
dropped, general.file_type and general.quantization_version are set as llama.cpp sets them.
"""
from __future__ import annotations

import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import quants

__all__ = [
    "QTYPES", "QUANTIZE_VERSION", "TensorPlan", "choose_tensor_type", "plan", "quantize_file",
    "cached_quantize", "main",
]

# Bump when the output of quantize_file for a given input could change (rules, numerics, KV
# handling): cached derived files (cached_quantize, the test fixtures) are keyed by it.
QUANTIZE_VERSION = 1

# target name -> (ggml type for ordinary weights, llama_ftype written to general.file_type)
QTYPES: Dict[str, Tuple[QT, int]] = {
    "q8_0": (QT.Q8_0, 7),   # LLAMA_FTYPE_MOSTLY_Q8_0
    "q4_0": (QT.Q4_0, 2),   # LLAMA_FTYPE_MOSTLY_Q4_0
    "q4_1": (QT.Q4_1, 3),   # LLAMA_FTYPE_MOSTLY_Q4_1
    "f16":  (QT.F16, 1),    # LLAMA_FTYPE_MOSTLY_F16
}
GGML_QNT_VERSION = 2
QK_K = 256

# tensor names llama.cpp never quantizes (substring match), from tensor_allows_quantization()
_NEVER_QUANTIZE = (
    "_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
    "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "indexer.k_proj.weight",
    "indexer.q_proj.weight", "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight",
    "time_mix_w2.weight", "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight",
    "time_mix_a0.weight", "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight",
    "time_mix_g2.weight", "time_mix_decay_w1.weight", "time_mix_decay_w2.weight",
    "time_mix_lerp_fused.weight", "attn_rel_b.weight", ".position_embd", "sam.pos_embd",
    "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger", "a.rvq.codebook",
    "mm.a.code_embd",
)
_NEVER_QUANTIZE_EXACT = ("position_embd.weight", "token_types.weight")
_TOKEN_EMBD = ("token_embd.weight", "per_layer_token_embd.weight")

_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def _block_size(t: QT) -> int:
    return gguf.GGML_QUANT_SIZES[t][0]


def _row_bytes(t: QT, ne0: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[t]
    return ne0 // block * size


def _check_qtype(qtype: str) -> str:
    key = str(qtype).strip().lower()
    if key not in QTYPES:
        raise ValueError(f"unknown quantization type {qtype!r}; choose one of: {', '.join(QTYPES)}")
    return key


def allows_quantization(name: str, n_dims: int) -> bool:
    """llama.cpp's tensor_allows_quantization for the default parameters."""
    if n_dims < 2 or not name.endswith("weight"):
        return False
    if name in _NEVER_QUANTIZE_EXACT:
        return False
    return not any(s in name for s in _NEVER_QUANTIZE)


def choose_tensor_type(name: str, ne: Sequence[int], src_type: QT, qtype: str, *,
                       has_output: bool) -> Tuple[QT, str]:
    """Type of tensor `name` (ggml dims `ne`, ne[0] = row length) in a `qtype` file, and a note
    ("" when nothing noteworthy happened). `has_output`: the model has its own output.weight
    (otherwise token_embd.weight doubles as the output projection)."""
    default, _ = QTYPES[_check_qtype(qtype)]
    if not allows_quantization(name, len(ne)):
        return src_type, ""
    if default == QT.F16:  # not a quantized type: llama.cpp applies no mixture rules
        return QT.F16, ""
    ne0 = int(ne[0])
    new, note = default, ""
    if name == "output.weight" or (not has_output and name in _TOKEN_EMBD):
        if ne0 % _block_size(new) != 0:
            new = QT.Q8_0
        elif new != QT.Q8_0:
            new = QT.Q6_K
    if new == QT.Q6_K:
        if ne0 % QK_K != 0:
            new, note = QT.Q8_0, f"Q6_K needs ne0 % {QK_K} == 0 (ne0={ne0}): Q8_0, as llama.cpp"
        else:
            new, note = QT.Q8_0, "llama.cpp would use Q6_K here; pyrt writes Q8_0 (no Q6_K quantizer yet)"
    if ne0 % _block_size(new) != 0:
        note = f"ne0={ne0} is not a multiple of {_block_size(new)} ({new.name}): F16, as llama.cpp"
        new = QT.F16
    return new, note


@dataclass(frozen=True)
class TensorPlan:
    name: str
    ne: Tuple[int, ...]     # ggml order: ne[0] is the row length
    src_type: QT
    dst_type: QT
    note: str = ""

    @property
    def convert(self) -> bool:
        return self.src_type != self.dst_type


def _can_dequantize(t: QT) -> bool:
    block, size = gguf.GGML_QUANT_SIZES[t]
    try:
        quants.dequantize(np.zeros((1, size), dtype=np.uint8), t)
        return True
    except (NotImplementedError, ValueError, TypeError):
        return False


def _plan_reader(reader: "gguf.GGUFReader", qtype: str) -> List[TensorPlan]:
    names = {t.name for t in reader.tensors}
    has_output = "output.weight" in names
    out: List[TensorPlan] = []
    for t in reader.tensors:
        ne = tuple(int(x) for x in t.shape)
        dst, note = choose_tensor_type(t.name, ne, QT(t.tensor_type), qtype, has_output=has_output)
        out.append(TensorPlan(t.name, ne, QT(t.tensor_type), dst, note))
    bad = sorted({p.src_type.name for p in out if p.convert and not _can_dequantize(p.src_type)})
    if bad:
        which = [p.name for p in out if p.convert and p.src_type.name in bad]
        raise ValueError(f"cannot convert tensors of type {', '.join(bad)} (e.g. {which[0]!r}); "
                         f"pyrt quantize reads F32, F16, BF16 and the ggml block-quantized types")
    return out


def _open(src: Path) -> "gguf.GGUFReader":
    try:
        reader = gguf.GGUFReader(src, "r")
    except (ValueError, OSError, IndexError, KeyError) as e:
        raise ValueError(f"{src} is not a readable GGUF file: {e}") from e
    if reader.endianess != gguf.GGUFEndian.LITTLE:
        raise ValueError(f"{src} is a big-endian GGUF; pyrt only handles little-endian files")
    return reader


def plan(src: Union[str, os.PathLike], qtype: str) -> List[TensorPlan]:
    """The per-tensor types `quantize_file(src, ..., qtype)` would produce (reads only headers)."""
    return _plan_reader(_open(Path(src)), qtype)


class _Writer(gguf.GGUFWriter):
    """GGUFWriter that can also write empty arrays (it refuses them), since a faithful copy of
    the KV section must keep them."""

    def _pack_val(self, val: Any, vtype: VT, add_vtype: bool, sub_type: Optional[VT] = None) -> bytes:
        if vtype == VT.ARRAY and sub_type is not None and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def _field_value(field: Any) -> Tuple[Any, VT, Optional[VT]]:
    """(value, type, array element type) of a GGUFReader field, exactly: strings as raw bytes
    (never decoded, so invalid UTF-8 survives), numbers as Python numbers of the same width."""
    vtype = VT(field.types[0])
    if vtype == VT.STRING:
        return bytes(field.parts[-1]), vtype, None
    if vtype == VT.ARRAY:
        # parts: key length, key bytes, value type, element type, count, elements...
        sub = VT(int(field.parts[3][0]))
        if sub == VT.ARRAY:
            raise ValueError(f"KV {field.name!r}: nested arrays are not supported")
        if sub == VT.STRING:
            return [bytes(field.parts[i]) for i in field.data], vtype, sub
        if not field.data:
            return [], vtype, sub
        vals = np.concatenate([field.parts[i] for i in field.data]).tolist()
        return vals, vtype, sub
    return field.parts[-1].tolist()[0], vtype, None


def _convert(data: np.ndarray, p: TensorPlan, chunk_elems: int = 1 << 22) -> np.ndarray:
    """Dequantize to f32 and quantize to p.dst_type, a slab of rows at a time."""
    ne0 = p.ne[0]
    nrows = int(np.prod(p.ne[1:], dtype=np.int64)) if len(p.ne) > 1 else 1
    src_rows = data.reshape(nrows, -1)
    if p.dst_type == QT.F16:
        out = np.empty((nrows, ne0), dtype=np.float16)
    else:
        out = np.empty((nrows, _row_bytes(p.dst_type, ne0)), dtype=np.uint8)
    step = max(1, chunk_elems // max(ne0, 1))
    for r in range(0, nrows, step):
        f32 = quants.dequantize(np.ascontiguousarray(src_rows[r:r + step]), p.src_type)
        out[r:r + step] = quants.quantize(f32.reshape(-1, ne0), p.dst_type)
    return out


ProgressArg = Union[None, bool, Callable[[int, int, str], None]]


def quantize_file(src: Union[str, os.PathLike], dst: Union[str, os.PathLike], qtype: str, *,
                  progress: ProgressArg = None) -> Dict[str, Any]:
    """Write `src` requantized to `qtype` at `dst` (atomically: temp file + rename).

    progress: None/False silent; True a bar on stderr; or a callable(done, total, tensor_name)
    called after each tensor. Returns a summary: per-type tensor counts in and out, tensors
    converted/copied, notes (fallbacks), tensor-data and file byte counts, seconds."""
    qtype = _check_qtype(qtype)
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no such GGUF file: {src}")
    if src.resolve() == dst.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise ValueError(f"source and destination are the same file ({src}); write to a new path")
    if dst.is_dir():
        raise ValueError(f"destination {dst} is a directory; give a file name")
    t0 = time.monotonic()
    reader = _open(src)
    plans = _plan_reader(reader, qtype)
    _, ftype = QTYPES[qtype]

    arch_field = reader.fields.get("general.architecture")
    if arch_field is None:
        raise ValueError(f"{src} has no general.architecture; not a model GGUF")
    arch = bytes(arch_field.parts[-1]).decode("utf-8", errors="replace")

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = _Writer(tmp, arch)
    try:
        # ---- KV section: source order and types; file_type / quantization_version as llama.cpp
        kv: Dict[str, Tuple[Any, VT, Optional[VT]]] = {}
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in _SPLIT_KEYS:
                continue
            kv[key] = _field_value(field)
        kv["general.quantization_version"] = (GGML_QNT_VERSION, VT.UINT32, None)
        kv["general.file_type"] = (ftype, VT.UINT32, None)
        for key, (val, vtype, sub) in kv.items():
            if key == "general.architecture" and vtype == VT.STRING and val == arch.encode():
                continue  # the writer put it first already
            writer.add_key_value(key, val, vtype, sub_type=sub)
        align = reader.alignment if "general.alignment" in reader.fields else gguf.GGUF_DEFAULT_ALIGNMENT
        writer.data_alignment = int(align)

        # ---- tensor table first, then the data tensor by tensor
        sizes_out: List[int] = []
        for t, p in zip(reader.tensors, plans):
            nbytes = int(t.n_bytes) if not p.convert else \
                int(np.prod(p.ne[1:], dtype=np.int64)) * _row_bytes(p.dst_type, p.ne[0])
            sizes_out.append(nbytes)
            writer.add_tensor_info(p.name, tuple(reversed(p.ne)), np.dtype(np.float32), nbytes,
                                   raw_dtype=p.dst_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        from .models import ProgressBar
        total_in = sum(int(t.n_bytes) for t in reader.tensors)
        bar = ProgressBar(f"quantizing {src.name} to {qtype}", total_in,
                          enabled=progress is True)
        for i, (t, p) in enumerate(zip(reader.tensors, plans)):
            data = _convert(t.data, p) if p.convert else t.data
            writer.write_tensor_data(data)
            del data
            bar.update(int(t.n_bytes))
            if callable(progress):
                progress(i + 1, len(plans), p.name)
        writer.flush()
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    seconds = time.monotonic() - t0
    bar.close()
    return {
        "src": str(src), "dst": str(dst), "qtype": qtype, "file_type": ftype,
        "n_tensors": len(plans),
        "types_in": dict(Counter(p.src_type.name for p in plans)),
        "types_out": dict(Counter(p.dst_type.name for p in plans)),
        "converted": sum(p.convert for p in plans),
        "copied": sum(not p.convert for p in plans),
        "notes": {p.name: p.note for p in plans if p.note},
        "bytes_in": total_in, "bytes_out": sum(sizes_out),
        "file_bytes_in": src.stat().st_size, "file_bytes_out": dst.stat().st_size,
        "seconds": round(seconds, 3),
    }


def _code_key() -> str:
    """Short digest of what determines quantize_file's output besides its input: this module's
    source, QUANTIZE_VERSION and the gguf package version (its quants do the numerics)."""
    import hashlib
    try:
        from importlib.metadata import version
        gguf_version = version("gguf")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        gguf_version = "?"
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(f"{QUANTIZE_VERSION}/{gguf_version}".encode())
    return h.hexdigest()[:8]


def cached_quantize(src: Union[str, os.PathLike], qtype: str, *, progress: ProgressArg = None) -> Path:
    """`src` quantized to `qtype`, made once and kept under <pyrt cache>/quantized/, keyed by the
    source's sha256, QUANTIZE_VERSION and a digest of this code (a changed quantizer never serves
    a stale file; the superseded file of the same source and type is deleted)."""
    from .models import cache_root, sha256_file
    qtype = _check_qtype(qtype)
    src = Path(src)
    prefix = f"{src.stem}.{qtype}.{sha256_file(src)[:16]}"
    out_dir = cache_root() / "quantized"
    out = out_dir / f"{prefix}.v{QUANTIZE_VERSION}-{_code_key()}.gguf"
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    quantize_file(src, out, qtype, progress=progress)
    for old in out_dir.glob(f"{prefix}.v*.gguf"):
        if old != out:
            try:
                old.unlink()
            except OSError:
                pass
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: `python -m pyrt.quantize IN OUT --type T` (pyrt.cli may delegate here)."""
    import argparse
    ap = argparse.ArgumentParser(prog="pyrt quantize", description="Requantize a GGUF model file.")
    ap.add_argument("src", help="input GGUF file")
    ap.add_argument("dst", help="output GGUF file")
    ap.add_argument("--type", "-t", dest="qtype", required=True, choices=list(QTYPES),
                    type=str.lower, help="target type")
    args = ap.parse_args(argv)
    try:
        s = quantize_file(args.src, args.dst, args.qtype, progress=True)
    except (ValueError, FileNotFoundError) as e:
        print(f"pyrt quantize: error: {e}", file=sys.stderr)
        return 2
    ins = ", ".join(f"{k} {v}" for k, v in sorted(s["types_in"].items()))
    outs = ", ".join(f"{k} {v}" for k, v in sorted(s["types_out"].items()))
    print(f"{s['dst']}: {s['n_tensors']} tensors [{ins}] -> [{outs}], "
          f"{s['file_bytes_in'] / 1e6:.1f} MB -> {s['file_bytes_out'] / 1e6:.1f} MB in {s['seconds']:.1f}s")
    for name, note in s["notes"].items():
        print(f"  {name}: {note}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
