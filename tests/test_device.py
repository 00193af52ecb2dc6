"""Device selection (Llama(device=...), --device, `pyrt devices`): parsing, the
clear errors of a build or machine without CUDA, "auto" falling back to the
CPU and saying why, and that device="cpu" is exactly the default path.

These run on any build: on a CPU-only build (the default) "cuda" must name the
missing backend and how to build it; on a CUDA build without a GPU
(PYRT_LIB=/path/to/cuda/libpyrt.so) it must say that no GPU was found. Where
a GPU is present, the "cuda" tests check the GPU path instead of the error."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pyrt
from pyrt import device as dev
from pyrt._native import lib
from tiny_model import write_tiny_llama

HAS_GPU = dev.cuda_device_count() > 0
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    return write_tiny_llama(tmp_path_factory.mktemp("device") / "tiny.gguf")


def run_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "pyrt.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


# ---- parsing -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, want", [
    ("cpu", ("cpu", 0)), ("cuda", ("cuda", 0)), ("cuda:0", ("cuda", 0)), ("cuda:3", ("cuda", 3)),
    ("auto", ("auto", 0)), ("CUDA:1", ("cuda", 1)), (" cpu ", ("cpu", 0)), (None, ("cpu", 0)),
])
def test_parse_device_accepts(spec, want):
    assert dev.parse_device(spec) == want


@pytest.mark.parametrize("spec", ["gpu", "cuda:-1", "cuda:x", "cuda:", "cuda:1.5", "cpu:0", "auto:1",
                                  "", "cuda0", "cuda:99999", "metal", 0, 1.0, b"cpu"])
def test_invalid_device_raises_value_error(spec, tiny_path):
    with pytest.raises(ValueError, match="device"):
        dev.parse_device(spec)
    with pytest.raises(ValueError, match="device"):     # before the model is even looked at
        pyrt.Llama("/nonexistent/model.gguf", device=spec)
    with pytest.raises(ValueError, match="device"):
        pyrt.Llama(str(tiny_path), device=spec)


# ---- the CPU is the default and the reference ----------------------------------------------------

def test_cpu_device_is_the_default_path(smollm2_path):
    with pyrt.Llama(str(smollm2_path), n_ctx=128) as a, pyrt.Llama(str(smollm2_path), n_ctx=128,
                                                                     device="cpu") as b:
        assert a.device == b.device == "cpu" and b.device_reason == "requested"
        assert a._ctx.backend == b._ctx.backend == lib.PYRT_BACKEND_CPU
        ids = a.tokenize(PROMPT)
        la, lb = a.logits(ids), b.logits(ids)
        assert la.shape == (len(ids), a.n_vocab())
        assert np.array_equal(la, lb)                     # bit-identical, not merely close
        ga = list(a.generate(ids, max_tokens=8, temperature=0))
        assert ga == list(b.generate(ids, max_tokens=8, temperature=0))
        assert np.array_equal(a.embed(PROMPT), b.embed(PROMPT))   # the embedding context too


# ---- "cuda" --------------------------------------------------------------------------------------

@pytest.mark.skipif(HAS_GPU, reason="a GPU is present: test_cuda_on_a_gpu covers it")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:2"])
def test_cuda_without_backend_or_gpu_raises_clearly(spec, tiny_path):
    if dev.cuda_compiled():
        why = "no usable GPU"
    else:
        why = r"no CUDA backend.*-DPYRT_CUDA=ON.*pip install"
    with pytest.raises(pyrt.UnsupportedError, match=why):
        pyrt.Llama(str(tiny_path), device=spec)
    # fails fast: the device is checked before the model is fetched or loaded
    with pytest.raises(pyrt.UnsupportedError, match=why):
        pyrt.Llama("/nonexistent/model.gguf", device=spec)


def _gpu_model_path(name: str):
    from pyrt.registry import ensure_model
    if name == "smollm2-135m-q4_k_m":            # Q4_K / Q5_0 / Q6_K / Q8_0 mix, as llama-quantize
        from pyrt.quantize import cached_quantize
        return cached_quantize(ensure_model("smollm2-135m"), "q4_k_m")
    return ensure_model(name)


@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA build and a GPU")
@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2-135m-q4_k_m", "gemma3-270m"])
def test_cuda_on_a_gpu(name):
    path = str(_gpu_model_path(name))
    with pyrt.Llama(path, n_ctx=128, device="cuda") as g, pyrt.Llama(path, n_ctx=128) as c:
        assert g.device == "cuda:0" and g._ctx.backend == lib.PYRT_BACKEND_CUDA
        ids = c.tokenize(PROMPT)
        lg, lc = g.logits(ids), c.logits(ids)
        assert np.mean((lg - lc) ** 2) / np.mean(lc ** 2) < 1e-3
        assert np.array_equal(lg[-1].argmax(), lc[-1].argmax())
        want = c.create_completion(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"]
        got = g.create_completion(PROMPT, max_tokens=8, temperature=0)["choices"][0]["text"]
        assert got[:6] == want[:6], (got, want)
        state = g.save_state()                   # a GPU cache moves to a CPU context and back
        c.load_state(state)
        g.load_state(c.save_state())
    n = dev.cuda_device_count()
    with pytest.raises(ValueError, match="does not exist"):
        pyrt.Llama(path, device=f"cuda:{n}")
    with pyrt.Llama(path, n_ctx=64, device="auto") as a:
        assert a.device == "cuda:0" and a.device_reason.startswith("auto: CUDA")


# ---- "auto" --------------------------------------------------------------------------------------

def test_auto_falls_back_to_cpu_and_says_why(smollm2_path):
    if HAS_GPU:
        pytest.skip("a GPU is present: auto may pick it")
    with pyrt.Llama(str(smollm2_path), n_ctx=128, device="auto") as a, \
            pyrt.Llama(str(smollm2_path), n_ctx=128) as c:
        assert a.device == "cpu"
        assert a.device_reason.startswith("auto: CPU, because ")
        assert ("no usable GPU" if dev.cuda_compiled() else "no CUDA backend") in a.device_reason
        ids = c.tokenize(PROMPT)
        assert np.array_equal(a.logits(ids), c.logits(ids))


def test_auto_is_reported_with_verbose(tiny_path, capsys):
    with pyrt.Llama(str(tiny_path), n_ctx=64, device="auto", verbose=True) as a:
        where = a.device
    assert f"pyrt: device {where} (auto: " in capsys.readouterr().err


class _LibWithout:
    """lib, but with CUDA kernels for every type except `missing`."""

    def __init__(self, missing):
        self._missing = set(missing)

    def __getattr__(self, name):
        return getattr(lib, name)

    def pyrt_backend_type_supported(self, backend, t):
        return int(backend == lib.PYRT_BACKEND_CPU or t not in self._missing)


@pytest.fixture
def pretend_gpu(monkeypatch):
    """Make the Python side believe a CUDA build with one GPU; the C library
    underneath is still the real one (whose offload then fails)."""
    monkeypatch.setattr(dev, "cuda_compiled", lambda: True)
    monkeypatch.setattr(dev, "cuda_device_count", lambda: 1)

    def without(*types):
        monkeypatch.setattr(dev, "lib", _LibWithout(types))
    return without


def test_unsupported_weight_types_named(pretend_gpu, tiny_path):
    pretend_gpu(lib.PYRT_TYPE_Q4_0)          # the tiny model has Q8_0, Q4_0 and F32 tensors
    with pytest.raises(pyrt.UnsupportedError, match=r"no kernels for Q4_0 \(\d+ tensors?, e\.g\. 'blk\."):
        pyrt.Llama(str(tiny_path), device="cuda")
    with pyrt.Llama(str(tiny_path), n_ctx=64, device="auto") as a:
        assert a.device == "cpu" and "no kernels for Q4_0" in a.device_reason
    with pytest.raises(ValueError, match=r"CUDA device 1 does not exist \(1 found"):
        pyrt.Llama(str(tiny_path), device="cuda:1")


def test_auto_falls_back_when_the_upload_fails(pretend_gpu, tiny_path):
    if HAS_GPU:
        pytest.skip("a GPU is present: the upload would succeed")
    pretend_gpu()                             # every type supported, but the real offload fails
    with pyrt.Llama(str(tiny_path), n_ctx=64, device="auto") as a:
        assert a.device == "cpu" and "GPU upload failed" in a.device_reason
    with pytest.raises(pyrt.UnsupportedError, match="device='cuda'"):
        pyrt.Llama(str(tiny_path), device="cuda")


# ---- what the build offers -----------------------------------------------------------------------

def test_backend_info():
    info = dev.backend_info()
    assert info["cpu"].startswith("CPU (")
    assert info["cuda_compiled"] == bool(lib.pyrt_backend_compiled(lib.PYRT_BACKEND_CUDA))
    assert len(info["cuda_devices"]) == dev.cuda_device_count()
    assert lib.pyrt_backend_compiled(lib.PYRT_BACKEND_CPU) == 1
    assert lib.pyrt_backend_compiled(99) == 0 and lib.pyrt_backend_type_supported(99, lib.PYRT_TYPE_F32) == 0
    assert lib.pyrt_backend_type_supported(lib.PYRT_BACKEND_CPU, lib.PYRT_TYPE_Q4_K) == 1
    if not info["cuda_compiled"]:
        assert lib.pyrt_backend_type_supported(lib.PYRT_BACKEND_CUDA, lib.PYRT_TYPE_Q8_0) == 0
    else:
        for t in ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K", "F16", "BF16", "F32"):
            assert lib.pyrt_backend_type_supported(lib.PYRT_BACKEND_CUDA, getattr(lib, f"PYRT_TYPE_{t}")) == 1, t


# ---- the command line ----------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", ["generate", "chat", "serve", "bench"])
@pytest.mark.parametrize("spec", ["gpu", "cuda:-1", "cuda:x"])
def test_cli_rejects_malformed_device(cmd, spec, capsys):
    from pyrt.cli import main
    with pytest.raises(SystemExit) as e:
        main([cmd, "--device", spec])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and "Traceback" not in err


def test_cli_cuda_error_is_a_clean_message(tiny_path):
    if HAS_GPU:
        pytest.skip("a GPU is present")
    r = run_cli("generate", "-m", str(tiny_path), "-n", "2", "--device", "cuda", "hello")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith("pyrt: error: device='cuda': ") and "Traceback" not in r.stderr
    assert ("no usable GPU" if dev.cuda_compiled() else "-DPYRT_CUDA=ON") in r.stderr
    r = run_cli("bench", "-m", str(tiny_path), "-p", "4", "-n", "2", "-r", "1", "--device", "cuda:1")
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("pyrt: error: ")


def test_cli_auto_runs_and_reports(tiny_path):
    r = run_cli("generate", "-m", str(tiny_path), "-n", "3", "--temp", "0", "--device", "auto", "-v", "hello")
    assert r.returncode == 0, r.stderr
    assert "pyrt: device " in r.stderr and "(auto: " in r.stderr
    r = run_cli("bench", "-m", str(tiny_path), "-p", "4", "-n", "2", "-r", "1", "--device", "auto", "--json")
    assert r.returncode == 0, r.stderr
    assert '"backend": "CUDA"' in r.stdout if HAS_GPU else '"backend": "CPU"' in r.stdout


def test_cli_devices_and_info(tiny_path):
    r = run_cli("devices")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("cpu:    CPU (")
    if not dev.cuda_compiled():
        assert "cuda:   not built in" in r.stdout and "-DPYRT_CUDA=ON" in r.stdout
    elif not HAS_GPU:
        assert "no usable GPU" in r.stdout
    else:
        assert "cuda:0" in r.stdout
    r = run_cli("info", str(tiny_path))
    assert r.returncode == 0, r.stderr
    cuda_line = [ln for ln in r.stdout.splitlines() if ln.startswith("CUDA:")]
    assert len(cuda_line) == 1
    assert ("built in" if dev.cuda_compiled() else "not built in") in cuda_line[0]
