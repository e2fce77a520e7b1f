"""CUDA C++ kernels compiled at run time by NVRTC and launched through the driver API, over ctypes.

For kernels Triton cannot express well (`kernels/cuda/*.cu`): NVRTC ships with every CUDA build of torch (and
as the `nvidia-cuda-nvrtc` wheel), so this needs no nvcc, no CUDA headers and no C++ extension build. A
compiled kernel is a cubin for the GPU's own architecture, cached in memory and on disk
(`$TESSERA_CUDA_CACHE`, default `~/.cache/tessera/cuda`). Launches go on torch's current stream, so CUDA
graphs capture them like any other kernel. NVRTC compiles without a GPU, so the CPU tests compile the kernels
for sm_90 too.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import re
import site
import threading
from pathlib import Path

import torch

CUDA_DIR = Path(__file__).resolve().parent / "cuda"
logger = logging.getLogger(__name__)
_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION = 6


class _LaunchAttribute(ctypes.Structure):
    # CUlaunchAttribute: the id, padding to 8 bytes, a 64-byte value union (here its first int)
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int),
                ("value_rest", ctypes.c_char * 60)]


class _LaunchConfig(ctypes.Structure):
    # CUlaunchConfig
    _fields_ = [("grid_x", ctypes.c_uint), ("grid_y", ctypes.c_uint), ("grid_z", ctypes.c_uint),
                ("block_x", ctypes.c_uint), ("block_y", ctypes.c_uint), ("block_z", ctypes.c_uint),
                ("shared_bytes", ctypes.c_uint), ("stream", ctypes.c_void_p),
                ("attrs", ctypes.POINTER(_LaunchAttribute)), ("num_attrs", ctypes.c_uint)]
_lock = threading.Lock()
_nvrtc: ctypes.CDLL | None = None
_driver: ctypes.CDLL | None = None
_functions: dict[tuple, CudaFunction] = {}


class CudaRtcError(RuntimeError):
    """NVRTC or the CUDA driver refused: the message carries the compiler log or the driver's error name."""


def _load_nvrtc() -> ctypes.CDLL:
    global _nvrtc
    if _nvrtc is None:
        names = ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        # pip wheels (torch's own CUDA dependencies, or nvidia-cuda-nvrtc on a CPU box) are not on the loader path
        for root in site.getsitepackages() + [site.getusersitepackages()]:
            names += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*")), reverse=True)
        errors = []
        for name in names:
            try:
                if os.path.isabs(name):  # NVRTC dlopens its builtins by soname: load them from the same folder
                    for builtins in glob.glob(os.path.join(os.path.dirname(name), "libnvrtc-builtins.so.*")):
                        if ".alt." not in builtins:
                            ctypes.CDLL(builtins)
                _nvrtc = ctypes.CDLL(name)
                break
            except OSError as exc:
                errors.append(str(exc))
        else:
            raise CudaRtcError("NVRTC not found (install the nvidia-cuda-nvrtc wheel): " + "; ".join(errors[:3]))
    return _nvrtc


def nvrtc_available() -> bool:
    try:
        _load_nvrtc()
        return True
    except CudaRtcError:
        return False


def _check_nvrtc(lib: ctypes.CDLL, status: int, what: str) -> None:
    if status != 0:
        lib.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise CudaRtcError(f"{what}: {lib.nvrtcGetErrorString(status).decode()}")


def compile_cubin(source: str, name_expression: str, arch: str, options: tuple[str, ...] = ()) -> tuple[bytes, str]:
    """(cubin, lowered kernel name) of `name_expression` (e.g. a template instance) in `source`, for `arch`
    ("sm_90"). Raises CudaRtcError with NVRTC's log on a compile error."""
    lib = _load_nvrtc()
    prog = ctypes.c_void_p()
    _check_nvrtc(lib, lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), b"kernel.cu", 0, None, None),
                 "nvrtcCreateProgram")
    try:
        _check_nvrtc(lib, lib.nvrtcAddNameExpression(prog, name_expression.encode()), "nvrtcAddNameExpression")
        opts = [f"--gpu-architecture={arch}", "-std=c++17", *options]
        c_opts = (ctypes.c_char_p * len(opts))(*[o.encode() for o in opts])
        status = lib.nvrtcCompileProgram(prog, len(opts), c_opts)
        if status != 0:
            size = ctypes.c_size_t()
            lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
            log = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetProgramLog(prog, log)
            raise CudaRtcError(f"NVRTC could not compile {name_expression}:\n{log.value.decode(errors='replace')}")
        size = ctypes.c_size_t()
        _check_nvrtc(lib, lib.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "nvrtcGetCUBINSize")
        cubin = ctypes.create_string_buffer(size.value)
        _check_nvrtc(lib, lib.nvrtcGetCUBIN(prog, cubin), "nvrtcGetCUBIN")
        lowered = ctypes.c_char_p()
        _check_nvrtc(lib, lib.nvrtcGetLoweredName(prog, name_expression.encode(), ctypes.byref(lowered)),
                     "nvrtcGetLoweredName")
        return cubin.raw, lowered.value.decode()
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


def _load_driver() -> ctypes.CDLL:
    global _driver
    if _driver is None:
        _driver = ctypes.CDLL("libcuda.so.1")
    return _driver


def _check_cu(status: int, what: str) -> None:
    if status != 0:
        name = ctypes.c_char_p()
        _load_driver().cuGetErrorName(status, ctypes.byref(name))
        raise CudaRtcError(f"{what}: {name.value.decode() if name.value else status}")


class CudaFunction:
    """One kernel loaded into one device's context. `launch` takes the grid, block, dynamic shared memory and
    the arguments as ctypes values (c_void_p for pointers, c_int32, c_float)."""

    def __init__(self, cubin: bytes, lowered: str, device: torch.device) -> None:
        drv = _load_driver()
        self.device = device
        self._module = ctypes.c_void_p()
        self._function = ctypes.c_void_p()
        with torch.cuda.device(device):
            torch.cuda.current_stream(device)  # makes torch's primary context current on this thread
            _check_cu(drv.cuModuleLoadData(ctypes.byref(self._module), cubin), "cuModuleLoadData")
            _check_cu(drv.cuModuleGetFunction(ctypes.byref(self._function), self._module, lowered.encode()),
                      "cuModuleGetFunction")
        self._max_dynamic_smem = 48 * 1024

    def launch(self, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               args: list, programmatic: bool = False) -> None:
        """`programmatic`: programmatic dependent launch (sm_90+): the kernel may start while the previous one
        in the stream finishes and must itself wait (`griddepcontrol.wait`) before reading what that one wrote."""
        drv = _load_driver()
        if shared_bytes > self._max_dynamic_smem:
            _check_cu(drv.cuFuncSetAttribute(self._function, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                             ctypes.c_int(shared_bytes)), "cuFuncSetAttribute(shared memory)")
            self._max_dynamic_smem = shared_bytes
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        stream = ctypes.c_void_p(torch.cuda.current_stream(self.device).cuda_stream)
        if not programmatic:
            _check_cu(drv.cuLaunchKernel(self._function, *[ctypes.c_uint(v) for v in grid],
                                         *[ctypes.c_uint(v) for v in block], ctypes.c_uint(shared_bytes), stream,
                                         params, None), "cuLaunchKernel")
            return
        attr = _LaunchAttribute(id=_CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION, value=1)
        config = _LaunchConfig(*grid, *block, shared_bytes, stream, ctypes.pointer(attr), 1)
        _check_cu(drv.cuLaunchKernelEx(ctypes.byref(config), self._function, params, None), "cuLaunchKernelEx")


def pointer(t: torch.Tensor | None, fallback: torch.Tensor) -> ctypes.c_void_p:
    """A kernel argument for an optional tensor: its address, or `fallback`'s (any valid pointer) when the kernel
    instance does not read it."""
    return ctypes.c_void_p((t if t is not None else fallback).data_ptr())


_INCLUDE = re.compile(r'^#include "([\w.]+)"$', re.MULTILINE)


def read_source(source_file: str) -> str:
    """`kernels/cuda/<source_file>` with each `#include "name"` line replaced by that file of the same folder
    (one level: NVRTC gets no include path, and the cache key then covers the headers too)."""
    text = (CUDA_DIR / source_file).read_text()
    return _INCLUDE.sub(lambda m: (CUDA_DIR / m.group(1)).read_text().replace("#pragma once\n", ""), text)


def _cache_dir() -> Path:
    return Path(os.environ.get("TESSERA_CUDA_CACHE", Path.home() / ".cache" / "tessera" / "cuda"))


def get_function(source_file: str, name_expression: str, device: torch.device) -> CudaFunction:
    """The kernel `name_expression` of `kernels/cuda/<source_file>`, compiled for `device` (memory, then disk
    cache, then NVRTC) and loaded into its context."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = (source_file, name_expression, index)
    with _lock:
        fn = _functions.get(key)
        if fn is not None:
            return fn
        major, minor = torch.cuda.get_device_capability(index)
        arch = f"sm_{major}{minor}"
        source = read_source(source_file)
        digest = hashlib.sha256(f"{arch}\0{name_expression}\0{source}".encode()).hexdigest()[:32]
        path = _cache_dir() / f"{digest}.cubin"
        if path.exists():
            lowered_path = path.with_suffix(".name")
            cubin, lowered = path.read_bytes(), lowered_path.read_text()
        else:
            cubin, lowered = compile_cubin(source, name_expression, arch)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.with_suffix(".name").write_text(lowered)
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_bytes(cubin)
                tmp.replace(path)  # the name file first, then the cubin: a cubin on disk always has its name
            except OSError:
                pass  # a read-only cache costs a compile per process, nothing else
        fn = CudaFunction(cubin, lowered, torch.device("cuda", index))
        _functions[key] = fn
        return fn


def loads_or_warns(source_file: str, name_expression: str, index: int, what: str) -> bool:
    """Builds (or finds cached) and loads one kernel instance on cuda:`index`: True, or False after one warning
    line naming `what` (e.g. "AWQ CUDA GEMV") and the first error line, for callers that fall back to Triton.
    No NVRTC, an NVRTC too old for this GPU, a driver that refuses the cubin: all end here, at load, instead of
    failing the first decode step."""
    try:
        get_function(source_file, name_expression, torch.device("cuda", index))
        return True
    except (CudaRtcError, OSError) as exc:
        lines = str(exc).splitlines() or [type(exc).__name__]
        logger.warning("%s unavailable on cuda:%d (%s); using the Triton GEMV", what, index,
                       next((line.strip() for line in lines if "error" in line), lines[0]))
        return False
