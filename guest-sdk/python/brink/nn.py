"""Inference with the models the host shares (``wasi:nn``): the node loads
each model once, batches concurrent callers, and runs them on the CPU or a
GPU. Needs ``"nn"`` in ``[tool.brink] capabilities`` and the model granted
in the manifest (``models = ["digits"]``)::

    from brink import nn
    model = nn.Model.open("digits")
    out = model.infer({"pixels": nn.Tensor.f32([1, 64], pixels)})
    label, confidence = nn.argmax(out["probabilities"].to_f32())
"""

import struct
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import Internal, InvalidEvent, NotImported, Transient

# Imported now: see config.py. Absent when the build's world has no "nn".
try:
    from wit_world.imports import graph as _graph
    from wit_world.imports import tensor as _tensor
except ImportError:
    _graph = None


def _wit():
    if _graph is None:
        raise NotImported("nn")
    return _graph, _tensor


class Tensor:
    """A tensor: dimensions, an element type (``"f32"``, ``"i64"``, ``"u8"``)
    and the elements' little-endian bytes."""

    _FORMATS = {"f32": ("f", "FP32"), "i64": ("q", "I64"), "u8": ("B", "U8"), "i32": ("i", "I32"), "f64": ("d", "FP64")}

    def __init__(self, dims: Sequence[int], ty: str, data: bytes):
        if ty not in self._FORMATS:
            raise Internal(f"tensor type {ty!r} is not one of {', '.join(self._FORMATS)}")
        self.dims = [int(d) for d in dims]
        self.ty = ty
        self.data = bytes(data)

    @classmethod
    def _of(cls, dims: Sequence[int], ty: str, values: Sequence) -> "Tensor":
        count = 1
        for d in dims:
            count *= int(d)
        if count != len(values):
            raise InvalidEvent(f"a {list(dims)} tensor holds {count} values, not {len(values)}")
        fmt = cls._FORMATS[ty][0]
        return cls(dims, ty, struct.pack(f"<{len(values)}{fmt}", *values))

    @classmethod
    def f32(cls, dims: Sequence[int], values: Sequence[float]) -> "Tensor":
        """A tensor of 32-bit floats."""
        return cls._of(dims, "f32", values)

    @classmethod
    def i64(cls, dims: Sequence[int], values: Sequence[int]) -> "Tensor":
        """A tensor of 64-bit integers."""
        return cls._of(dims, "i64", values)

    @classmethod
    def u8(cls, dims: Sequence[int], values: Sequence[int]) -> "Tensor":
        """A tensor of bytes."""
        return cls._of(dims, "u8", values)

    def values(self) -> List:
        """The elements, decoded."""
        fmt = self._FORMATS[self.ty][0]
        size = struct.calcsize(fmt)
        if len(self.data) % size:
            raise Internal(f"a {self.ty} tensor of {len(self.data)} bytes")
        return list(struct.unpack(f"<{len(self.data) // size}{fmt}", self.data))

    def to_f32(self) -> List[float]:
        """The elements of an f32 tensor."""
        if self.ty != "f32":
            raise Internal(f"expected an f32 tensor, got {self.ty}")
        return self.values()


def _error(model: str, e: Exception) -> Exception:
    value = getattr(e, "value", e)
    try:
        code, data = value.code().name, value.data()
    except Exception:  # not the contract's error resource
        code, data = "UNKNOWN", str(value)
    message = f"model `{model}`: {code.lower().replace('_', '-')}: {data}"
    if code == "SECURITY":
        return Internal(f"{message} (grant it in the manifest: models = [\"{model}\"])")
    if code == "INVALID_ARGUMENT":
        return InvalidEvent(message)
    if code in ("TIMEOUT", "TOO_LARGE"):
        return Transient(message)
    return Internal(message)


class Model:
    """A model the host shares, opened by its name in the manifest."""

    def __init__(self, name: str, graph):
        self.name = name
        self._graph = graph

    @classmethod
    def open(cls, name: str) -> "Model":
        """Opens model ``name``; fails when the function is not granted it."""
        graph, _ = _wit()
        try:
            return cls(name, graph.load_by_name(name))
        except Exception as e:
            raise _error(name, e) from None

    def infer(self, inputs: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Runs the model on named input tensors; returns its named outputs."""
        _, tensor = _wit()
        try:
            context = self._graph.init_execution_context()
            named = [
                (name, tensor.Tensor(t.dims, getattr(tensor.TensorType, Tensor._FORMATS[t.ty][1]), t.data))
                for name, t in inputs.items()
            ]
            outputs = context.compute(named)
        except Exception as e:
            raise _error(self.name, e) from None
        types = {v[1]: k for k, v in Tensor._FORMATS.items()}
        result = {}
        for name, t in outputs:
            ty = types.get(t.ty().name)
            if ty is None:
                raise Internal(f"model `{self.name}` output `{name}` has type {t.ty().name}")
            result[name] = Tensor(t.dimensions(), ty, t.data())
        return result


def argmax(values: Sequence[float]) -> Optional[Tuple[int, float]]:
    """The index and value of the largest element (the first on ties), or None."""
    best: Optional[Tuple[int, float]] = None
    for i, v in enumerate(values):
        if best is None or v > best[1]:
            best = (i, v)
    return best
