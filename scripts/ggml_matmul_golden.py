"""Golden digests for tests/test_iquants.py: ggml_mul_mat through llama.cpp's own CPU backend
(llama-cpp-python's libggml, LLAMA_GGML_LIB or the AVX2 venv pyrt's benchmarks use), weights in the
plain CPU buffer or, for IQ4_NL with rows % 8 == 0, in the CPU_REPACK buffer (the path a model load
takes). One case per process (libggml does not like being torn down and set up again):

    PYRT_LIB=build/libpyrt.so PYTHONPATH=. python scripts/ggml_matmul_golden.py IQ4_NL 16 544 6
"""
import ctypes as C, os, sys
import numpy as np

LIB = os.environ.get("LLAMA_GGML_LIB") or os.path.expanduser(
    "~/.cache/pyrt/avx2-venv/lib/python3.11/site-packages/llama_cpp/lib")
base = C.CDLL(os.path.join(LIB, "libggml-base.so"), mode=C.RTLD_GLOBAL)
cpu = C.CDLL(os.path.join(LIB, "libggml-cpu.so"), mode=C.RTLD_GLOBAL)
g = C.CDLL(os.path.join(LIB, "libggml.so"), mode=C.RTLD_GLOBAL)

class InitParams(C.Structure):
    _fields_ = [("mem_size", C.c_size_t), ("mem_buffer", C.c_void_p), ("no_alloc", C.c_bool)]

vp = C.c_void_p
def fn(lib, name, res, *args):
    f = getattr(lib, name); f.restype = res; f.argtypes = list(args); return f

ggml_init = fn(base, "ggml_init", vp, InitParams)
ggml_free = fn(base, "ggml_free", None, vp)
new2d = fn(base, "ggml_new_tensor_2d", vp, vp, C.c_int, C.c_int64, C.c_int64)
mul_mat = fn(base, "ggml_mul_mat", vp, vp, vp, vp)
new_graph = fn(base, "ggml_new_graph", vp, vp)
expand = fn(base, "ggml_build_forward_expand", None, vp, vp)
nbytes = fn(base, "ggml_nbytes", C.c_size_t, vp)
alloc_ctx = fn(g, "ggml_backend_alloc_ctx_tensors_from_buft", vp, vp, vp)
tset = fn(base, "ggml_backend_tensor_set", None, vp, vp, C.c_size_t, C.c_size_t)
tget = fn(base, "ggml_backend_tensor_get", None, vp, vp, C.c_size_t, C.c_size_t)
buf_free = fn(base, "ggml_backend_buffer_free", None, vp)
cpu_init = fn(cpu, "ggml_backend_cpu_init", vp)
cpu_threads = fn(cpu, "ggml_backend_cpu_set_n_threads", None, vp, C.c_int)
compute = fn(base, "ggml_backend_graph_compute", C.c_int, vp, vp)
cpu_buft = fn(cpu, "ggml_backend_cpu_buffer_type", vp)
dev_by_type = fn(g, "ggml_backend_dev_by_type", vp, C.c_int)
dev_reg = fn(base, "ggml_backend_dev_backend_reg", vp, vp)
get_proc = fn(base, "ggml_backend_reg_get_proc_address", vp, vp, C.c_char_p)
buft_name = fn(base, "ggml_backend_buft_name", C.c_char_p, vp)

def extra_bufts():
    dev = dev_by_type(0)
    assert dev
    p = get_proc(dev_reg(dev), b"ggml_backend_dev_get_extra_bufts")
    f = C.CFUNCTYPE(C.POINTER(vp), vp)(p)
    arr = f(dev)
    out = []
    i = 0
    while arr[i]:
        out.append(arr[i]); i += 1
    return out

def mm(ggml_type, w_bytes, rows, cols, x, repack, n_threads=2):
    x = np.ascontiguousarray(x, np.float32)
    n_tok = x.shape[0]
    buft_w = cpu_buft()
    if repack:
        bs = [b for b in extra_bufts() if b"REPACK" in buft_name(b).upper()]
        assert bs, [buft_name(b) for b in extra_bufts()]
        buft_w = bs[0]
    cw = ggml_init(InitParams(1 << 20, None, True))
    cx = ggml_init(InitParams(1 << 20, None, True))
    W = new2d(cw, ggml_type, cols, rows)
    X = new2d(cx, 0, cols, n_tok)
    Y = mul_mat(cx, W, X)
    bw = alloc_ctx(cw, buft_w); bx = alloc_ctx(cx, cpu_buft())
    assert bw and bx
    wb = np.ascontiguousarray(w_bytes, np.uint8)
    assert wb.size == nbytes(W), (wb.size, nbytes(W))
    tset(W, wb.ctypes.data, 0, wb.size)
    tset(X, x.ctypes.data, 0, x.nbytes)
    gc = ggml_init(InitParams(1 << 22, None, True))
    gr = new_graph(gc)
    expand(gr, Y)
    be = cpu_init(); cpu_threads(be, n_threads)
    assert compute(be, gr) == 0
    y = np.empty((n_tok, rows), np.float32)
    tget(Y, y.ctypes.data, 0, y.nbytes)
    for b in (bw, bx): buf_free(b)
    for c in (cw, cx, gc): ggml_free(c)
    return y


if __name__ == "__main__":
    import hashlib
    sys.path[:0] = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")]
    import test_iquants as ti
    from gguf import GGMLQuantizationType as T
    t, rows, cols, nt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    w, x = ti.golden_case(t, rows, cols, nt)
    y = mm(int(T[t]), w, rows, cols, x, repack=(t == "IQ4_NL" and rows % 8 == 0))
    print(f'    ("{t}", {rows}, {cols}, {nt}): "{hashlib.sha256(y.tobytes()).hexdigest()[:16]}",')
