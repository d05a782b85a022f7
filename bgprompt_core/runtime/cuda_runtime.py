"""CUDA through cuda-python (what NVIDIA's TensorRT samples use): the runtime module, errors by name, the GPU.

No torch and no pycuda; a missing driver is reported as such. The TensorRT backend's buffers and streams, and
``runtime.build.gpu_present``, go through here.
"""
from __future__ import annotations

from pathlib import Path

from bgprompt_core.errors import TensorRTError


def cudart():
    """cuda-python's runtime module: ``cuda.bindings.runtime`` from 12.6.1, ``cuda.cudart`` before (JetPack 6.0's
    12.2 has only that; see test/data/cuda_python_facts.json)."""
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime
        except ImportError as exc:
            raise TensorRTError("the tensorrt backend needs cuda-python (pip install cuda-python; see "
                                "docs/DEPLOYMENT.md)") from exc
    return runtime


INSUFFICIENT_DRIVER = 35  # cudaErrorInsufficientDriver: what cuda-python's runtime returns without a driver (12.9)


def cuda_error_name(rt, err) -> str:
    """``cudaErrorMemoryAllocation (2)``: the name as NVIDIA's samples print it (cudaGetErrorName)."""
    try:
        _, name = rt.cudaGetErrorName(err)
        name = name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # noqa: BLE001 - a name is a courtesy; the number is the error
        name = "unknown CUDA error"
    return f"{name} ({int(getattr(err, 'value', err))})"


def cuda_call(result, what: str = "CUDA call", rt=None):
    """Unwrap cuda-python's ``(error, value...)`` tuples, raising TensorRTError with the error's name."""
    err, *values = result if isinstance(result, tuple) else (result,)
    code = int(getattr(err, "value", err))
    if code != 0:
        name = cuda_error_name(rt or cudart(), err)
        hint = (" (no usable NVIDIA driver: install it / JetPack, or use backend onnxruntime)"
                if code == INSUFFICIENT_DRIVER else "")
        raise TensorRTError(f"{what} failed: {name}{hint}")
    return values[0] if len(values) == 1 else (tuple(values) or None)


def cuda_run(rt, name: str, *args):
    """Call ``rt.<name>(*args)``; a missing driver (cuda-python 12.2-12.6 raise RuntimeError) is a TensorRTError."""
    try:
        result = getattr(rt, name)(*args)
    except RuntimeError as exc:
        raise TensorRTError(f"{name} failed: {exc} (no usable NVIDIA driver: install it / JetPack, or use backend "
                            f"onnxruntime)") from exc
    return cuda_call(result, name, rt)


def cuda_device_count() -> int:
    return int(cuda_run(cudart(), "cudaGetDeviceCount"))


def gpu_identity() -> dict:
    """What an engine is specific to. Orin AGX / NX / Nano share a name and compute capability (8.7); their
    memory, SM count and board model (``/proc/device-tree/model``) tell them apart."""
    rt = cudart()
    device = cuda_run(rt, "cudaGetDevice")
    props = cuda_run(rt, "cudaGetDeviceProperties", device)
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    board = Path("/proc/device-tree/model")
    return {"gpu": name, "compute_capability": f"{props.major}.{props.minor}",
            "gpu_memory_mb": int(props.totalGlobalMem) >> 20, "multiprocessors": int(props.multiProcessorCount),
            "board": board.read_bytes().decode(errors="replace").rstrip("\x00").strip() if board.is_file() else ""}
