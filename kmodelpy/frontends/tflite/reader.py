"""Read a TFLite flatbuffer into a plain, stable Python view (:class:`TFLiteFile`).

Only subgraph 0 is read (as ncc does, compiler spec §4.1). Everything is converted eagerly into
plain Python / numpy objects so callers never touch the flatbuffer API:

* :class:`Tensor`: index, name, shape (tuple; a tensor without shape gets ``()``), shape_signature,
  dtype (TFLite type name: "FLOAT32", "INT8", ...), ``data`` (numpy array of the constant, reshaped to
  ``shape``; ``None`` when the tensor has no constant buffer), and :class:`Quantization`
  (scales, zero_points as numpy arrays, quantized_dimension) or ``None``.
* :class:`Operator`: index, builtin name ("CONV_2D"; custom ops "CUSTOM:<code>"), inputs/outputs
  (tensor indices, -1 when absent) and ``options``: a plain dict with snake_case keys
  (``padding`` "SAME"/"VALID", ``stride_h``, ``dilation_w``, ``fused_activation`` "NONE"/"RELU"/...,
  ``filter_h``/``filter_w`` for pools, ``alpha``, ``beta``, ``axis``, ``keep_dims``, ``begin_mask``,
  ``num_splits``, ``new_shape`` (list), ``in_data_type``/``out_data_type`` (type names) ...); a custom
  operator's raw ``custom_options`` bytes.
* :class:`TFLiteFile`: tensors, operators (file order), inputs, outputs (tensor indices), path.

Dynamic shapes: a graph input whose ``shape_signature`` is -1 on the batch dimension (the usual
Keras export) is read with batch 1 (the ``shape`` field already says 1); -1 on any other dimension
raises :class:`FormatError` (re-export with a fixed input size).

Sparse constants (``Tensor.sparsity``: TFLite's pruned-weight format) are densified here, exactly as TFLite's
format converter does (:mod:`kmodelpy.frontends.tflite.sparsity`): ``data`` is always the dense array.

Errors are :class:`kmodelpy.errors.FormatError` with a single line naming the file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import FormatError
from .sparsity import densify, read_sparsity

_CONVERT_HINT = (
    "convert it with tf.lite.TFLiteConverter.from_keras_model(model).convert() "
    "(no optimizations) and pass the .tflite file"
)

_NP_DTYPES = {
    "FLOAT32": np.float32, "FLOAT16": np.float16, "FLOAT64": np.float64, "INT32": np.int32,
    "UINT8": np.uint8, "INT64": np.int64, "BOOL": np.bool_, "INT16": np.int16, "INT8": np.int8,
    "UINT32": np.uint32, "UINT64": np.uint64, "UINT16": np.uint16,
}

MAX_ELEMENTS = 1 << 28  # a feature map of 1 GiB in float32: far beyond any model a K210 (or this emulator) runs

# option method name -> dict key (everything else: CamelCase -> snake_case)
_KEY_RENAMES = {
    "FusedActivationFunction": "fused_activation",
    "DilationHFactor": "dilation_h",
    "DilationWFactor": "dilation_w",
    "FilterHeight": "filter_h",
    "FilterWidth": "filter_w",
}


@dataclass
class Quantization:
    scales: np.ndarray
    zero_points: np.ndarray
    quantized_dimension: int = 0


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple
    shape_signature: tuple | None
    dtype: str
    data: np.ndarray | None = None
    quantization: Quantization | None = None

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclass
class Operator:
    index: int
    builtin: str
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class TFLiteFile:
    path: str
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    version: int = 3

    def producers(self) -> dict[int, int]:
        """tensor index -> index of the operator producing it."""
        return {t: op.index for op in self.operators for t in op.outputs if t >= 0}

    def consumers(self) -> dict[int, list[int]]:
        """tensor index -> indices of the operators reading it (file order)."""
        res: dict[int, list[int]] = {}
        for op in self.operators:
            for t in op.inputs:
                if t >= 0:
                    res.setdefault(t, []).append(op.index)
        return res


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def _options(tflite, op) -> dict:
    """Builtin options table -> plain dict (enums as names, vectors as lists)."""
    otype = op.BuiltinOptionsType()
    if otype == 0:
        return {}
    cls_name = _enum_names(tflite.BuiltinOptions).get(otype)
    cls = getattr(tflite, cls_name, None) if cls_name else None
    table = op.BuiltinOptions()
    if cls is None or table is None:
        return {}
    obj = cls()
    obj.Init(table.Bytes, table.Pos)
    pad_names = _enum_names(tflite.Padding)
    act_names = _enum_names(tflite.ActivationFunctionType)
    type_names = _enum_names(tflite.TensorType)
    res = {}
    for meth in dir(cls):
        if not meth[:1].isupper() or meth in ("Init", "GetRootAs") or meth.startswith("GetRootAs"):
            continue
        if meth.endswith(("AsNumpy", "Length", "IsNone", "BufferHasIdentifier")):
            continue
        key = _KEY_RENAMES.get(meth, _snake(meth))
        if hasattr(cls, meth + "AsNumpy"):
            if getattr(obj, meth + "IsNone")():
                continue
            val = [int(v) if not isinstance(v, float) else float(v)
                   for v in np.asarray(getattr(obj, meth + "AsNumpy")()).ravel().tolist()]
        else:
            try:
                val = getattr(obj, meth)()
            except TypeError:  # accessor needing an index or a table object: not a scalar option
                continue
            if not isinstance(val, (bool, int, float)):
                continue
        if meth == "Padding":
            val = pad_names.get(val, str(val))
        elif meth == "FusedActivationFunction":
            val = act_names.get(val, str(val))
        elif meth.endswith("DataType") or meth in ("OutputType", "IndexOutType", "QuantizedBiasType"):
            val = type_names.get(val, str(val))
        res[key] = val
    return res


def check_not_other_format(p: Path) -> None:
    """One-line FormatError for a SavedModel folder, a .pb graph or another folder passed as a model."""
    if p.is_dir():
        if (p / "saved_model.pb").exists() or (p / "saved_model.pbtxt").exists():
            raise FormatError(f"{p}: this is a TensorFlow SavedModel directory, not a .tflite file; "
                              f"convert it with tf.lite.TFLiteConverter.from_saved_model('{p}').convert() "
                              "(no optimizations) and pass the .tflite file")
        raise FormatError(f"{p}: is a directory, not a .tflite file")
    if p.name == "saved_model.pb" or p.suffix == ".pb":
        raise FormatError(f"{p}: this is a TensorFlow protobuf graph (SavedModel), not a .tflite file; "
                          "convert it with tf.lite.TFLiteConverter.from_saved_model(<dir>).convert() "
                          "(no optimizations) and pass the .tflite file")


def read_tflite(path) -> TFLiteFile:
    """Read ``path`` (a .tflite file) into a :class:`TFLiteFile`. Raises FormatError."""
    p = Path(path)
    check_not_other_format(p)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise FormatError(f"{p}: cannot read the file ({e.strerror or e})") from None
    return parse_tflite(buf, str(p))


def parse_tflite(buf: bytes, name: str = "<tflite>") -> TFLiteFile:
    """Parse TFLite flatbuffer bytes (see :func:`read_tflite`)."""
    if buf[:8] == b"\x89HDF\r\n\x1a\n":
        raise FormatError(f"{name}: this is a Keras .h5 (HDF5) file, not a .tflite file; {_CONVERT_HINT}")
    if buf[:2] == b"PK":
        raise FormatError(f"{name}: this is a zip archive (Keras .keras file?), not a .tflite file; {_CONVERT_HINT}")
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise FormatError(f"{name}: not a TFLite flatbuffer (no 'TFL3' identifier); pass a .tflite file")
    import tflite  # deferred: keeps `import kmodelpy` cheap

    try:
        return _parse(tflite, buf, name)
    except FormatError:
        raise
    except Exception as e:  # the generated flatbuffer accessors do no bounds checks
        raise FormatError(f"{name}: truncated or corrupt TFLite flatbuffer ({len(buf)} bytes; "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'bad offset'}); "
                          "re-export or re-download the .tflite file") from None


def _parse(tflite, buf: bytes, name: str) -> TFLiteFile:
    model = tflite.Model.GetRootAsModel(buf, 0)
    if model.SubgraphsLength() < 1:
        raise FormatError(f"{name}: TFLite file has no subgraph")
    sg = model.Subgraphs(0)
    type_names = _enum_names(tflite.TensorType)
    op_names = _enum_names(tflite.BuiltinOperator)

    tensors: list[Tensor] = []
    for i in range(sg.TensorsLength()):
        t = sg.Tensors(i)
        tname = (t.Name() or b"").decode("utf-8", "replace")
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if not t.ShapeIsNone() else ()
        sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if not t.ShapeSignatureIsNone() else None
        dtype = type_names.get(t.Type(), f"TYPE_{t.Type()}")
        data = None
        bidx = t.Buffer()
        if 0 < bidx < model.BuffersLength():
            b = model.Buffers(bidx)
            raw = None
            sparsity = read_sparsity(tflite, t)
            if not b.DataIsNone() and (b.DataLength() > 0 or sparsity is not None):  # a sparse zero tensor stores none
                raw = b.DataAsNumpy().tobytes()
                if len(raw) != b.DataLength():
                    raise FormatError(f"{name}: truncated TFLite file (buffer of tensor '{tname}')")
            elif b.Offset() > 1:  # large-model format: data stored after the flatbuffer
                off, size = int(b.Offset()), int(b.Size())
                if off + size > len(buf):
                    raise FormatError(f"{name}: truncated TFLite file (buffer of tensor '{tname}')")
                raw = buf[off:off + size]
            if raw is not None and sparsity is not None:
                data = densify(_sparse_values(raw, dtype, tname, name), sparsity, shape, tname, name)
            elif raw is not None:
                data = _decode(raw, dtype, shape, tname, name)
        q = t.Quantization()
        quant = None
        if q is not None and not q.ScaleIsNone() and q.ScaleLength() > 0:
            zps = q.ZeroPointAsNumpy() if not q.ZeroPointIsNone() else np.zeros(q.ScaleLength(), np.int64)
            quant = Quantization(np.asarray(q.ScaleAsNumpy(), np.float32).copy(),
                                 np.asarray(zps, np.int64).copy(), int(q.QuantizedDimension()))
        tensors.append(Tensor(i, tname, shape, sig, dtype, data, quant))

    for t in tensors:
        if t.data is None and t.shape and int(np.prod([max(d, 1) for d in t.shape], dtype=np.int64)) > MAX_ELEMENTS:
            raise FormatError(f"{name}: tensor '{t.name}' is declared as {list(t.shape)}, more than {MAX_ELEMENTS} "
                              "elements (a corrupted file?); re-export or re-download the model")
    operators: list[Operator] = []
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        oc = model.OperatorCodes(op.OpcodeIndex())
        code = max(int(oc.BuiltinCode()), int(oc.DeprecatedBuiltinCode()))
        builtin = op_names.get(code, f"BUILTIN_{code}")
        if builtin == "CUSTOM":
            builtin = "CUSTOM:" + (oc.CustomCode() or b"").decode("utf-8", "replace")
        ins = [int(v) for v in op.InputsAsNumpy()] if not op.InputsIsNone() else []
        outs = [int(v) for v in op.OutputsAsNumpy()] if not op.OutputsIsNone() else []
        for v in ins + outs:
            if v >= len(tensors):
                raise FormatError(f"{name}: corrupt TFLite file (operator {i} refers to tensor {v})")
        options = _options(tflite, op)
        if builtin.startswith("CUSTOM:") and not op.CustomOptionsIsNone():
            options["custom_options"] = op.CustomOptionsAsNumpy().tobytes()
        operators.append(Operator(i, builtin, ins, outs, options))

    inputs = [int(v) for v in sg.InputsAsNumpy()] if not sg.InputsIsNone() else []
    outputs = [int(v) for v in sg.OutputsAsNumpy()] if not sg.OutputsIsNone() else []
    for v in inputs + outputs:
        if not 0 <= v < len(tensors):
            raise FormatError(f"{name}: corrupt TFLite file (graph input/output refers to tensor {v})")
    for v in inputs:
        _check_static(tensors[v], name)
    return TFLiteFile(name, tensors, operators, inputs, outputs, int(model.Version()))


def _check_static(t: Tensor, name: str) -> None:
    dims = t.shape_signature if t.shape_signature is not None else t.shape
    bad = [k for k, d in enumerate(dims) if d < 0 and k > 0] + [k for k, d in enumerate(t.shape) if d <= 0 and k > 0]
    if bad:
        raise FormatError(f"{name}: input tensor '{t.name}' has a dynamic shape {list(dims)}; re-export the "
                          "model with a fixed input size (e.g. keras.Input(shape=(H, W, C)))")


def _sparse_values(raw: bytes, dtype: str, tname: str, name: str) -> np.ndarray:
    """The stored values of a sparse constant (1-D, little-endian ``dtype``)."""
    npt = _NP_DTYPES.get(dtype)
    if npt is None or len(raw) % np.dtype(npt).itemsize:
        raise FormatError(f"{name}: sparse tensor '{tname}' ({dtype}) holds {len(raw)} bytes, not a whole number "
                          "of values; re-export or re-download the model")
    return _decode(raw, dtype, (len(raw) // np.dtype(npt).itemsize,), tname, name)


def _decode(raw: bytes, dtype: str, shape: tuple, tname: str, name: str) -> np.ndarray:
    npt = _NP_DTYPES.get(dtype)
    if npt is None:  # STRING, RESOURCE, INT4, ...: keep the raw bytes
        return np.frombuffer(raw, np.uint8).copy()
    itemsize = np.dtype(npt).itemsize
    count = int(np.prod(shape)) if shape else 1
    if len(raw) != count * itemsize:
        raise FormatError(f"{name}: constant tensor '{tname}' holds {len(raw)} bytes, its shape "
                          f"{list(shape)} ({dtype}) needs {count * itemsize}")
    arr = np.frombuffer(raw, np.dtype(npt).newbyteorder("<")).astype(npt)
    return arr.reshape(shape) if shape else arr.reshape(())
