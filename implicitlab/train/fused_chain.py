"""A compiled kernel for the step of small elementwise-activation chains: forward, loss and backward
fused, runs in vector lanes (issue #18).

Why a kernel. :mod:`.chain_grad` writes the pass out with PyTorch's batched ops: one ``bmm`` and one
fused activation kernel per layer and direction, over all runs at once. For the nets we sweep by the
thousand (L = 10 layers of width 5, n = 50) every op is tiny, so a step is a chain of ~60 passes over
memory, and ATen's float64 GELU kernels cost 3 ns (forward) and 8 ns (backward) per element. The C
kernel in ``kernels/chain.c`` puts runs into vector lanes — 8 runs per 512-bit vector in float64, 16
in float32 — so every multiply-add acts on 8 (16) runs at once with full vectors whatever the widths
and n, no sum crosses lanes, and a group's activations stay in the core's L2 cache from its forward
pass to its last gradient; the products are register-blocked four ways; σ and σ′ are computed
together (GELU: one ``erfc`` and one ``exp`` per element, vectorised through glibc's libmvec where
available). A run's arithmetic does not depend on its group or lane, so run r's numbers are those of
run r alone, bit for bit. The maths is that of :mod:`.chain_grad` (see its docstring); the loss
derivatives are those of :func:`.linear_grad.dloss_doutputs` (square without ½, exp and logistic on ±1
labels with one output, the softmax cross-entropy), written out for the plain (not normalized)
objective. GELU is evaluated as z·Φ(z) with Φ(z) = erfc(−z/√2)/2, which has no cancellation for
z ≪ 0 (PyTorch's (1 + erf(z/√2))/2 loses relative accuracy there; both agree to rounding elsewhere).

What it covers (:func:`supports`): CPU tensors, float64 or float32, shared full-batch inputs X (n, d),
no fixed head, activations none/relu/gelu/smooth_relu/tanh, losses square/exp/logistic/ce with
``mean`` or ``sum``, not normalized. Everything else — and any machine where the kernel cannot be
built — takes :func:`.chain_grad.chain_gradients`, which gives the same numbers to rounding (the
tests hold both, and autograd, to 1e-12 in float64). It is also only chosen for layers up to
:data:`MAX_WIDTH` wide whose working set fits :data:`MAX_SCRATCH`: beyond that the BLAS products of
the batched path win.

Building. The first call compiles ``kernels/chain.c`` with the system C compiler (``cc``, or ``$CC``)
at ``-O3 -march=native`` into a cache folder (``$IMPLICITLAB_KERNEL_CACHE``, else
``$XDG_CACHE_HOME/implicitlab`` or ``~/.cache/implicitlab``), keyed by the source, the flags and this
CPU's feature flags (a cache shared by different machines never hands one a binary it cannot run).
It first tries with libmvec (glibc ≥ 2.35), then without. ``IMPLICITLAB_FUSED=0`` turns the kernel
off; :func:`status` says which path is in use and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

__all__ = ["MAX_SCRATCH", "MAX_WIDTH", "activation_seconds", "chain_step", "scratch_bytes", "status", "supports"]

MAX_WIDTH = 64
"""Widest layer (inputs included) the kernel is used for."""
MAX_SCRATCH = 8 << 20
"""Largest per-group working set (:func:`scratch_bytes`: the interleaved activations, σ′ and backward
buffers of one group of runs) the kernel is used for.

Both limits are measured (CPU time, one thread, loaded 2-core AVX-512 machine with 4 MiB of L2 per
core, kernel vs the batched PyTorch pass): 4.8× at 1,000 GELU runs of width 5 (n = 50, 0.3 MiB), 7.4×
for ReLU; 2.2× at 100 runs of 10→16→16→1 (n = 200); 1.6× at 100 runs of 20→32→32→1 (n = 500,
6.5 MiB); 1.4–1.8× at 8 runs of 49→32→32→10 with cross-entropy (n = 200, 3.4 MiB in float32); 1.0× at
50 runs of 64→64→64→1 (n = 200, 5.5 MiB); 0.11× at 12 runs of 196→64→64→10 (n = 1,000, 52 MiB),
where the batched BLAS products win by far."""

_ACT = {"none": 0, "relu": 1, "gelu": 2, "smooth_relu": 3, "tanh": 4}
_LOSS = {"square": 0, "exp": 1, "logistic": 2, "ce": 3}
_SOURCE_DIR = Path(__file__).with_name("kernels")
_FLAGS = ["-O3", "-march=native", "-fopenmp-simd", "-fno-math-errno", "-fPIC", "-shared"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # 512-bit vectors where the CPU has AVX-512 (no effect without it): libmvec's 8-wide erfc/exp
    _FLAGS.append("-mprefer-vector-width=512")

_lib: ctypes.CDLL | None = None
_tried = False
_status = "not built yet"


def _cpu_key() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = ""
    return f"{platform.machine()}|{platform.processor()}|{flags}"


def _cache_dir() -> Path:
    root = os.environ.get("IMPLICITLAB_KERNEL_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "implicitlab"


def _compile(cc: str, out: Path, mvec: bool) -> str | None:
    """Compile into ``out`` (atomically); None on success, else the compiler's complaint."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=out.parent)
    os.close(fd)
    cmd = [cc, *_FLAGS, f"-I{_SOURCE_DIR}", str(_SOURCE_DIR / "chain.c"), "-o", tmp]
    cmd += ["-DIMPLICITLAB_MVEC", "-lmvec", "-lm"] if mvec else ["-lm"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        Path(tmp).unlink(missing_ok=True)
        return str(exc)
    if proc.returncode != 0:
        Path(tmp).unlink(missing_ok=True)
        return (proc.stderr or proc.stdout).strip().splitlines()[-1:][0] if (proc.stderr or proc.stdout) else "failed"
    os.replace(tmp, out)
    return None


def _load() -> ctypes.CDLL | None:
    global _lib, _tried, _status
    if _tried:
        return _lib
    _tried = True
    if os.environ.get("IMPLICITLAB_FUSED", "1") == "0":
        _status = "off (IMPLICITLAB_FUSED=0)"
        return None
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        _status = "no C compiler found (cc, gcc or $CC): the batched PyTorch path is used"
        return None
    digest = hashlib.sha256()
    for name in ("chain.c", "chain_body.h"):
        digest.update((_SOURCE_DIR / name).read_bytes())
    digest.update(" ".join(_FLAGS).encode())
    digest.update(_cpu_key().encode())
    reasons = []
    for mvec in (True, False):
        key = digest.copy()
        key.update(b"mvec" if mvec else b"plain")
        path = _cache_dir() / f"chain-{key.hexdigest()[:20]}.so"
        if not path.exists():
            try:
                err = _compile(cc, path, mvec)
            except OSError as exc:  # e.g. an unwritable cache folder
                err = str(exc)
            if err is not None:
                reasons.append(f"{'with' if mvec else 'without'} libmvec: {err}")
                continue
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            reasons.append(f"loading {path}: {exc}")
            continue
        for suffix in ("f64", "f32"):
            fn = getattr(lib, f"chain_step_{suffix}")
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                           ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_int, ctypes.c_double, ctypes.c_int, ctypes.c_double, ctypes.c_void_p]
        _lib = lib
        _status = f"compiled kernel {path.name} ({'libmvec' if mvec else 'scalar libm'})"
        return lib
    _status = "kernel not built (" + "; ".join(reasons) + "): the batched PyTorch path is used"
    return None


def activation_seconds(activation: str, z: torch.Tensor, iterations: int = 1000) -> float:
    """CPU seconds per pass of the kernel's σ-and-σ′ loop over the float64 entries ``z`` (a copy into a
    scratch buffer included; ``iterations`` passes timed together): the elementwise floor of a step, for
    the benchmark. Raises if the kernel is unavailable."""
    import time

    lib = _load()
    if lib is None:
        raise RuntimeError(f"the fused chain kernel is unavailable: {_status}")
    z = z.detach().to(torch.float64).contiguous().reshape(-1)
    a, s = torch.empty_like(z), torch.empty_like(z)
    fn = lib.activation_pass_f64
    fn.restype = None
    fn.argtypes = [ctypes.c_int, ctypes.c_double, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                   ctypes.c_void_p, ctypes.c_int64]
    fn(_ACT[activation], 0.1, z.numel(), _ptr(z), _ptr(a), _ptr(s), 10)  # warm-up
    t0 = time.process_time()
    fn(_ACT[activation], 0.1, z.numel(), _ptr(z), _ptr(a), _ptr(s), iterations)
    return (time.process_time() - t0) / iterations


def status() -> str:
    """Which path small chains take, and why (builds the kernel if that was not tried yet)."""
    _load()
    return _status


def supports(weights: list[torch.Tensor], head, X: torch.Tensor, loss_name: str, reduction: str,
             normalized: bool, activation: str) -> bool:
    """Whether :func:`chain_step` handles this case (the kernel is then built if needed)."""
    if normalized or head is not None or X.ndim != 2 or X.device.type != "cpu":
        return False
    if activation not in _ACT or loss_name not in _LOSS or reduction not in ("mean", "sum"):
        return False
    if X.dtype not in (torch.float64, torch.float32):
        return False
    widths = [weights[0].shape[2]] + [W.shape[1] for W in weights]
    if max(widths) > MAX_WIDTH or scratch_bytes(widths, X.shape[0], X.dtype) > MAX_SCRATCH:
        return False
    if loss_name in ("exp", "logistic") and weights[-1].shape[1] != 1:
        return False
    return _load() is not None


def scratch_bytes(widths: list[int], n: int, dtype: torch.dtype) -> int:
    """The kernel's working set for one group of runs (one vector of lanes: 8 in float64, 16 in float32):
    the inputs, activations and σ′ of every hidden layer and two backward buffers, all interleaved."""
    lanes = 8 if dtype == torch.float64 else 16
    size = 8 if dtype == torch.float64 else 4
    hidden = sum(widths[1:-1])
    return (widths[0] + 2 * hidden + 2 * max(widths)) * n * lanes * size


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


_prepared: tuple | None = None  # (key, prepared arrays, tensors they point into) of the last call


def _prepare(Ws, grads, X, y, loss_name):
    """XT, dims, pointer tables and the checked targets/labels of one call (see :func:`chain_step`)."""
    n, dtype = X.shape[0], X.dtype
    XT = X.detach().t().contiguous()
    dims = torch.tensor([Ws[0].shape[2]] + [W.shape[1] for W in Ws], dtype=torch.int64)
    w_ptrs = (ctypes.c_void_p * len(Ws))(*[_ptr(W) for W in Ws])
    g_ptrs = (ctypes.c_void_p * len(Ws))(*[_ptr(g) for g in grads])
    d_out = Ws[-1].shape[1]
    target = label = None
    if loss_name == "ce":  # the kernel indexes with the labels: check them (a bad one would read out of bounds)
        label = y.detach().to(torch.int64).contiguous()
        if label.shape != (n,) or (n and (int(label.min()) < 0 or int(label.max()) >= d_out)):
            raise ValueError(f"cross-entropy labels must be (n={n},) class indices in [0, {d_out}), got shape "
                             f"{tuple(y.shape)}")
    else:
        target = y.detach().to(dtype).contiguous()
        ok = target.shape in ((n,), (n, 1)) if d_out == 1 else target.shape == (n, d_out)
        if not ok:
            raise ValueError(f"targets must be (n={n},) or (n, {d_out}) for {d_out} output(s), got {tuple(y.shape)}")
    return XT, dims, w_ptrs, g_ptrs, target, label


def chain_step(weights: list[torch.Tensor], X: torch.Tensor, y: torch.Tensor, loss_name: str, reduction: str,
               activation: str, eps: float, grads: list[torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Per-run objective ``(R,)`` and gradients ``[(R, out_k, in_k)]`` (written into ``grads`` if given).

    Call only where :func:`supports` is True. ``y`` as :func:`implicitlab.losses.loss` reads it for a
    shared batch: ``(n,)`` or ``(n, d_out)`` targets (square), ``(n,)`` ±1 labels (exp, logistic),
    ``(n,)`` class indices (ce).

    The transposed X, the checked targets and the pointer tables of the last call are reused while the
    tensors' data pointers and version counters are unchanged (a training loop's case); an in-place
    edit through PyTorch bumps the version and is seen, one made through a NumPy view of X or y is not."""
    lib = _load()
    if lib is None:
        raise RuntimeError(f"the fused chain kernel is unavailable: {_status}")
    R, n = weights[0].shape[0], X.shape[0]
    dtype = X.dtype
    Ws = [W.detach().contiguous() for W in weights]
    if grads is None:
        grads = [torch.empty_like(W) for W in Ws]
    # A training loop calls with the same tensors every step (weights updated in place, gradients
    # into the same buffers): the transposed data, checked targets and pointer tables are kept for it.
    key = (tuple(_ptr(W) for W in Ws), tuple(_ptr(g) for g in grads), tuple(W.shape for W in Ws), dtype,
           _ptr(X), X._version, tuple(X.shape), _ptr(y), y._version, tuple(y.shape), loss_name)
    global _prepared
    if _prepared is None or _prepared[0] != key:
        _prepared = (key, _prepare(Ws, grads, X, y, loss_name), Ws, grads, X, y)  # the tensors kept alive
    XT, dims, w_ptrs, g_ptrs, target, label = _prepared[1]
    obj = torch.empty(R, dtype=dtype)
    c = 1.0 / n if reduction == "mean" else 1.0
    fn = lib.chain_step_f64 if dtype == torch.float64 else lib.chain_step_f32
    rc = fn(R, len(Ws), _ptr(dims), n, _ptr(XT), ctypes.addressof(w_ptrs), ctypes.addressof(g_ptrs),
            _ptr(target) if target is not None else None, _ptr(label) if label is not None else None,
            _LOSS[loss_name], c, _ACT[activation], float(eps), _ptr(obj))
    if rc != 0:
        raise MemoryError("the fused chain kernel could not allocate its scratch buffers")
    return obj, grads
