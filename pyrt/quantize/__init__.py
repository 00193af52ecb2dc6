"""`pyrt quantize IN.gguf OUT.gguf --type T`: requantize a GGUF model file.

Types: q8_0, q4_0, q4_1, q5_0, q5_1, f16, the K-quant files q2_k, q3_k_s, q3_k_m (alias q3_k),
q3_k_l, q4_k_s, q4_k_m (alias q4_k), q5_k_s, q5_k_m (alias q5_k) and q6_k, and the non-linear
iq4_nl and iq4_xs (as llama-quantize makes them without --imatrix).

Reads with pyrt.gguf_file.GGUFFile (the loader's validating parser, over mmap), writes with
gguf.GGUFWriter, one tensor at a time: the tensor table is registered first
(GGUFWriter.add_tensor_info), then each tensor's data is produced and written
(write_tensor_data) before the next one is read, so peak memory is about one tensor.

Per-tensor types follow llama.cpp's llama-quantize (pyrt.quantize.mix: choose_tensor_type and
the rules it mirrors). Numerics: dequantize to f32 with gguf.quants, then quantize with ggml's
reference quantizers: gguf.quants for the 32-element types (byte-identical to ggml's
quantize_row_*_ref), and numpy ports of quantize_row_q2_K/q3_K/q4_K/q5_K/q6_K_ref and of
quantize_iq4_nl/iq4_xs without imatrix (pyrt.quantize.kquants), so tensors come out
byte-identical to llama-quantize's.
KV pairs are copied in order with their exact types (strings and string arrays as raw bytes);
split keys are dropped, general.file_type and general.quantization_version are set as llama.cpp
sets them. Tensors keep the source file's order (llama-quantize sorts them by layer and name).
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

from ..gguf_file import GGUFError, GGUFFile
from ..registry import ProgressBar, cache_root, sha256_file
from .kquants import _QUANTIZERS, quantize_rows
from .mix import QTYPES, MixContext, _check_qtype, _layer_of, choose_tensor_type, mix_context

__all__ = [
    "QTYPES", "QUANTIZE_VERSION", "MixContext", "TensorPlan", "choose_tensor_type", "plan",
    "quantize_file", "quantize_rows", "cached_quantize", "main",
]

# Bump when the output of quantize_file for a given input could change (rules, numerics, KV
# handling): cached derived files (cached_quantize, the test fixtures) are keyed by it.
QUANTIZE_VERSION = 2

GGML_QNT_VERSION = 2
_SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def _row_bytes(t: QT, ne0: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[t]
    return ne0 // block * size


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


def _open(src: Path) -> GGUFFile:
    """`src` parsed by pyrt's own GGUF reader, with all of its hostile-input checks (the ones
    the model loader runs)."""
    try:
        return GGUFFile(src)
    except (GGUFError, OSError) as e:
        raise ValueError(f"{src} is not a readable GGUF: {e}") from None


def _architecture(gf: GGUFFile) -> Optional[str]:
    """general.architecture, its bytes decoded as UTF-8 with U+FFFD for invalid sequences; None
    when it is missing or not a string."""
    if gf.metadata_types.get("general.architecture") != VT.STRING:
        return None
    return gf.raw_metadata("general.architecture").decode("utf-8", "replace")


def _plan_file(gf: GGUFFile, qtype: str) -> List[TensorPlan]:
    tensors = list(gf.tensors.values())
    names = [t.name for t in tensors]
    has_output = "output.weight" in names
    ctx = mix_context(_architecture(gf) or "", gf.metadata, names)
    plans: Dict[int, TensorPlan] = {}
    # llama.cpp walks the tensors by layer, then name: its counters see them in that order
    for i in sorted(range(len(names)), key=lambda i: (_layer_of(names[i]), names[i])):
        t = tensors[i]
        ne = tuple(int(x) for x in t.shape)
        dst, note = choose_tensor_type(t.name, ne, QT(t.type), qtype, has_output=has_output, ctx=ctx)
        plans[i] = TensorPlan(t.name, ne, QT(t.type), dst, note)
    out = [plans[i] for i in range(len(names))]
    bad = sorted({p.src_type.name for p in out if p.convert and not _can_dequantize(p.src_type)})
    if bad:
        which = [p.name for p in out if p.convert and p.src_type.name in bad]
        raise ValueError(f"cannot convert tensors of type {', '.join(bad)} (e.g. {which[0]!r}); "
                         f"pyrt quantize reads F32, F16, BF16 and the ggml block-quantized types")
    return out


def plan(src: Union[str, os.PathLike], qtype: str) -> List[TensorPlan]:
    """The per-tensor types `quantize_file(src, ..., qtype)` would produce (reads only headers)."""
    with _open(Path(src)) as gf:
        return _plan_file(gf, qtype)


class _Writer(gguf.GGUFWriter):
    """GGUFWriter that can also write empty arrays (it refuses them), since a faithful copy of
    the KV section must keep them."""

    def _pack_val(self, val: Any, vtype: VT, add_vtype: bool, sub_type: Optional[VT] = None) -> bytes:
        if vtype == VT.ARRAY and sub_type is not None and len(val) == 0:
            head = self._pack("I", vtype) if add_vtype else b""
            return head + self._pack("I", sub_type) + self._pack("Q", 0)
        return super()._pack_val(val, vtype, add_vtype, sub_type)


def _kv_value(gf: GGUFFile, key: str) -> Tuple[Any, VT, Optional[VT]]:
    """(value, type, array element type) of a KV pair exactly as stored: strings as raw bytes
    (never decoded, so invalid UTF-8 survives), numbers as Python numbers of the same width."""
    vtype = VT(gf.metadata_types[key])
    sub = VT(gf.array_types[key]) if vtype == VT.ARRAY else None
    return gf.raw_metadata(key), vtype, sub


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
    qfn = _QUANTIZERS.get(p.dst_type)
    for r in range(0, nrows, step):
        f32 = quants.dequantize(np.ascontiguousarray(src_rows[r:r + step]), p.src_type)
        f32 = f32.reshape(-1, ne0)
        out[r:r + step] = qfn(f32) if qfn is not None else quants.quantize(f32, p.dst_type)
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
    with _open(src) as gf:
        return _write(gf, src, dst, qtype, progress, t0)


def _write(gf: GGUFFile, src: Path, dst: Path, qtype: str, progress: ProgressArg,
           t0: float) -> Dict[str, Any]:
    """quantize_file's work on the opened source; returns its summary."""
    plans = _plan_file(gf, qtype)
    _, ftype = QTYPES[qtype]

    arch = _architecture(gf)
    if arch is None:
        raise ValueError(f"{src} has no general.architecture string; not a model GGUF")
    tensors = list(gf.tensors.values())

    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    writer = _Writer(tmp, arch)
    try:
        # ---- KV section: source order and types; file_type / quantization_version as llama.cpp
        kv: Dict[str, Tuple[Any, VT, Optional[VT]]] = {}
        for key in gf.metadata:
            # GGUF.* keys stay out (gguf-py's reader names its header fields GGUF.version, ...)
            if key.startswith("GGUF.") or key in _SPLIT_KEYS:
                continue
            kv[key] = _kv_value(gf, key)
        kv["general.quantization_version"] = (GGML_QNT_VERSION, VT.UINT32, None)
        kv["general.file_type"] = (ftype, VT.UINT32, None)
        for key, (val, vtype, sub) in kv.items():
            if key == "general.architecture" and vtype == VT.STRING and val == arch.encode():
                continue  # the writer put it first already
            writer.add_key_value(key, val, vtype, sub_type=sub)
        writer.data_alignment = gf.alignment   # general.alignment, or GGUF's default 32

        # ---- tensor table first, then the data tensor by tensor
        sizes_out: List[int] = []
        for t, p in zip(tensors, plans):
            nbytes = t.nbytes if not p.convert else \
                int(np.prod(p.ne[1:], dtype=np.int64)) * _row_bytes(p.dst_type, p.ne[0])
            sizes_out.append(nbytes)
            writer.add_tensor_info(p.name, tuple(reversed(p.ne)), np.dtype(np.float32), nbytes,
                                   raw_dtype=p.dst_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()

        total_in = sum(t.nbytes for t in tensors)
        bar = ProgressBar(f"quantizing {src.name} to {qtype}", total_in,
                          enabled=progress is True)
        for i, (t, p) in enumerate(zip(tensors, plans)):
            data = gf.tensor_data(t.name)     # zero-copy view of the source mmap
            if p.convert:
                data = _convert(data, p)
            writer.write_tensor_data(data)
            del data
            bar.update(t.nbytes)
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
    """Short digest of what determines quantize_file's output besides its input: this package's
    source (every module of pyrt.quantize, by name), QUANTIZE_VERSION and the gguf package version
    (its quants do the numerics)."""
    import hashlib
    try:
        from importlib.metadata import version
        gguf_version = version("gguf")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        gguf_version = "?"
    h = hashlib.sha256()
    for f in sorted(Path(__file__).parent.glob("*.py")):
        h.update(f"{f.name}\0{f.stat().st_size}\0".encode())
        h.update(f.read_bytes())
    h.update(f"{QUANTIZE_VERSION}/{gguf_version}".encode())
    return h.hexdigest()[:8]


def cached_quantize(src: Union[str, os.PathLike], qtype: str, *, progress: ProgressArg = None) -> Path:
    """`src` quantized to `qtype`, made once and kept under <pyrt cache>/quantized/, keyed by the
    source's sha256, QUANTIZE_VERSION and a digest of this code (a changed quantizer never serves
    a stale file; the superseded file of the same source and type is deleted)."""
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
