"""Write small .tflite flatbuffers in tests (no TensorFlow): tensors, constant buffers,
quantization, operators with builtin options.

Field slots of the fixed tables (Model, SubGraph, Tensor, ...) follow the TFLite schema; the slot
and scalar type of every *options* field are read from the accessor source of the ``tflite``
package (``self._tab.Offset(N)`` and ``number_types.XxxFlags``), so any options table works::

    b = TFLiteBuilder()
    x = b.tensor("x", [1, 4, 4, 3])
    w = b.const("w", np.ones((8, 3, 3, 3), np.float32))
    bias = b.const("b", np.zeros(8, np.float32))
    y = b.tensor("y", [1, 4, 4, 8])
    b.op("CONV_2D", [x, w, bias], [y], "Conv2DOptions", padding="SAME", stride_h=1, stride_w=1)
    data = b.build(inputs=[x], outputs=[y])
"""
from __future__ import annotations

import inspect
import re

import flatbuffers
import numpy as np
import tflite
from flatbuffers import number_types as N

_KEYS = {"fused_activation": "FusedActivationFunction", "dilation_h": "DilationHFactor",
         "dilation_w": "DilationWFactor", "filter_h": "FilterHeight", "filter_w": "FilterWidth"}
_TYPES = {k: v for k, v in vars(tflite.TensorType).items() if not k.startswith("_")}
_NP = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT32": np.int32, "INT8": np.int8, "UINT8": np.uint8,
       "INT64": np.int64, "INT16": np.int16, "BOOL": np.bool_}
_PREPEND = {"Int8Flags": "PrependInt8Slot", "Uint8Flags": "PrependUint8Slot", "BoolFlags": "PrependBoolSlot",
            "Int16Flags": "PrependInt16Slot", "Int32Flags": "PrependInt32Slot", "Uint32Flags": "PrependUint32Slot",
            "Int64Flags": "PrependInt64Slot", "Float32Flags": "PrependFloat32Slot"}


def _camel(key: str) -> str:
    return _KEYS.get(key) or "".join(p.capitalize() for p in key.split("_"))


def _field(cls, meth: str):
    """(slot, flags name, is_vector) of an options accessor."""
    src = inspect.getsource(getattr(cls, meth))
    off = int(re.search(r"Offset\((\d+)\)", src).group(1))
    flags = re.search(r"number_types\.(\w+Flags), (?:a|o) \+", src).group(1)
    return (off - 4) // 2, flags, "Vector(o)" in src


class TFLiteBuilder:
    def __init__(self):
        self.tensors: list[dict] = []
        self.buffers: list[bytes | None] = [None]  # None: a buffer without data (b"" is an empty data vector)
        self.ops: list[tuple] = []
        self.opcodes: list[str] = []

    def tensor(self, name, shape, dtype="FLOAT32", data=None, quant=None, shape_signature=None, sparsity=None) -> int:
        """Add a tensor; ``data`` (bytes or array) makes it constant; ``quant`` = (scales,
        zero_points, quantized_dimension); ``sparsity`` = (traversal_order, block_map, dim_metadata) with
        dim_metadata a list of ("DENSE", dense_size) or ("SPARSE_CSR", (segments_type, segments),
        (indices_type, indices)), types "Int32Vector" / "Uint16Vector" / "Uint8Vector" (``data`` then holds
        the stored values only)."""
        buf = 0
        if data is not None:
            raw = data if isinstance(data, (bytes, bytearray)) else np.ascontiguousarray(data, _NP[dtype]).tobytes()
            self.buffers.append(bytes(raw))
            buf = len(self.buffers) - 1
        self.tensors.append(dict(name=name, shape=list(shape), dtype=dtype, buffer=buf, quant=quant,
                                 sig=shape_signature, sparsity=sparsity))
        return len(self.tensors) - 1

    def const(self, name, array, dtype=None, quant=None) -> int:
        array = np.asarray(array)
        if dtype is None:
            dtype = {np.dtype(v): k for k, v in _NP.items()}[array.dtype]
        return self.tensor(name, array.shape, dtype, array, quant)

    def op(self, builtin: str, inputs, outputs, options_type: str | None = None, custom_options: bytes | None = None,
           **options) -> None:
        if builtin not in self.opcodes:
            self.opcodes.append(builtin)
        self.ops.append((self.opcodes.index(builtin), list(inputs), list(outputs), options_type, options,
                         custom_options))

    # ------------------------------------------------------------ serialisation
    def _ivec(self, b, values, flags="Int32Flags"):
        values = list(values)
        size = {"Int32Flags": 4, "Int64Flags": 8, "Float32Flags": 4, "Uint8Flags": 1, "Uint16Flags": 2}[flags]
        b.StartVector(size, len(values), size)
        for v in reversed(values):
            b.Prepend(getattr(N, flags), v)
        return b.EndVector()

    def _options(self, b, type_name, options):
        cls = getattr(tflite, type_name)
        fields = []
        for key, val in options.items():
            meth = _camel(key)
            slot, flags, is_vec = _field(cls, meth)
            if meth == "Padding":
                val = getattr(tflite.Padding, val)
            elif meth == "FusedActivationFunction":
                val = getattr(tflite.ActivationFunctionType, val)
            elif isinstance(val, str):
                val = _TYPES[val]
            if is_vec:
                val = self._ivec(b, val, flags)
            fields.append((slot, flags, is_vec, val))
        b.StartObject(max([f[0] for f in fields], default=0) + 1)
        for slot, flags, is_vec, val in fields:
            if is_vec:
                b.PrependUOffsetTRelativeSlot(slot, val, 0)
            else:
                getattr(b, _PREPEND[flags])(slot, val, None)  # None default: always written
        return b.EndObject(), getattr(tflite.BuiltinOptions, type_name)

    def _sparsity(self, b, sp):
        order, block_map, dims = sp
        vec_flags = {"Int32Vector": "Int32Flags", "Uint16Vector": "Uint16Flags", "Uint8Vector": "Uint8Flags"}
        dim_offs = []
        for d in dims:
            fields = {}
            if d[0] == "SPARSE_CSR":
                for slot, (kind, values) in ((3, d[1]), (5, d[2])):
                    v = self._ivec(b, [int(x) for x in values], vec_flags[kind])
                    b.StartObject(1)
                    b.PrependUOffsetTRelativeSlot(0, v, 0)
                    fields[slot] = (getattr(tflite.SparseIndexVector, kind), b.EndObject())
            b.StartObject(6)
            b.PrependInt8Slot(0, 1 if d[0] == "SPARSE_CSR" else 0, None)
            if d[0] == "DENSE":
                b.PrependInt32Slot(1, int(d[1]), None)
            for slot, (kind, off) in fields.items():
                b.PrependUint8Slot(slot - 1, kind, None)
                b.PrependUOffsetTRelativeSlot(slot, off, 0)
            dim_offs.append(b.EndObject())
        ov = self._ivec(b, order)
        bv = self._ivec(b, block_map) if block_map else None
        b.StartVector(4, len(dim_offs), 4)
        for o in reversed(dim_offs):
            b.PrependUOffsetTRelative(o)
        dv = b.EndVector()
        b.StartObject(3)
        b.PrependUOffsetTRelativeSlot(0, ov, 0)
        if bv is not None:
            b.PrependUOffsetTRelativeSlot(1, bv, 0)
        b.PrependUOffsetTRelativeSlot(2, dv, 0)
        return b.EndObject()

    def build(self, inputs, outputs, version: int = 3) -> bytes:
        b = flatbuffers.Builder(1024)
        buf_offs = []
        for raw in self.buffers:
            data = b.CreateByteVector(raw) if raw is not None else None
            b.StartObject(3)
            if data is not None:
                b.PrependUOffsetTRelativeSlot(0, data, 0)
            buf_offs.append(b.EndObject())
        t_offs = []
        for t in self.tensors:
            name = b.CreateString(t["name"])
            shape = self._ivec(b, t["shape"])
            sig = self._ivec(b, t["sig"]) if t["sig"] is not None else None
            q = None
            if t["quant"] is not None:
                scales, zps, qdim = t["quant"]
                sv = self._ivec(b, [float(s) for s in np.ravel(scales)], "Float32Flags")
                zv = self._ivec(b, [int(z) for z in np.ravel(zps)], "Int64Flags")
                b.StartObject(7)
                b.PrependUOffsetTRelativeSlot(2, sv, 0)
                b.PrependUOffsetTRelativeSlot(3, zv, 0)
                b.PrependInt32Slot(6, int(qdim), 0)
                q = b.EndObject()
            sp = self._sparsity(b, t["sparsity"]) if t["sparsity"] is not None else None
            b.StartObject(9)
            b.PrependUOffsetTRelativeSlot(0, shape, 0)
            b.PrependInt8Slot(1, _TYPES[t["dtype"]], None)
            b.PrependUint32Slot(2, t["buffer"], None)
            b.PrependUOffsetTRelativeSlot(3, name, 0)
            if q is not None:
                b.PrependUOffsetTRelativeSlot(4, q, 0)
            if sp is not None:
                b.PrependUOffsetTRelativeSlot(6, sp, 0)
            if sig is not None:
                b.PrependUOffsetTRelativeSlot(7, sig, 0)
            t_offs.append(b.EndObject())
        op_offs = []
        for idx, ins, outs, otype, options, custom in self.ops:
            iv, ov = self._ivec(b, ins), self._ivec(b, outs)
            opt = self._options(b, otype, options) if otype else None
            cv = b.CreateByteVector(bytes(custom)) if custom is not None else None
            b.StartObject(9)
            b.PrependUint32Slot(0, idx, None)
            b.PrependUOffsetTRelativeSlot(1, iv, 0)
            b.PrependUOffsetTRelativeSlot(2, ov, 0)
            if opt is not None:
                b.PrependUint8Slot(3, opt[1], 0)
                b.PrependUOffsetTRelativeSlot(4, opt[0], 0)
            if cv is not None:
                b.PrependUOffsetTRelativeSlot(5, cv, 0)
            op_offs.append(b.EndObject())
        code_offs = []
        for name in self.opcodes:
            custom = b.CreateString(name.split(":", 1)[1]) if name.startswith("CUSTOM:") else None
            code = getattr(tflite.BuiltinOperator, "CUSTOM" if custom is not None else name)
            b.StartObject(4)
            b.PrependInt8Slot(0, min(code, 127), None)
            if custom is not None:
                b.PrependUOffsetTRelativeSlot(1, custom, 0)
            b.PrependInt32Slot(2, 1, None)
            b.PrependInt32Slot(3, code, None)
            code_offs.append(b.EndObject())

        def table_vec(offs):
            b.StartVector(4, len(offs), 4)
            for o in reversed(offs):
                b.PrependUOffsetTRelative(o)
            return b.EndVector()

        tv, opv = table_vec(t_offs), table_vec(op_offs)
        inv, outv = self._ivec(b, inputs), self._ivec(b, outputs)
        sg_name = b.CreateString("main")
        b.StartObject(5)
        b.PrependUOffsetTRelativeSlot(0, tv, 0)
        b.PrependUOffsetTRelativeSlot(1, inv, 0)
        b.PrependUOffsetTRelativeSlot(2, outv, 0)
        b.PrependUOffsetTRelativeSlot(3, opv, 0)
        b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
        sg = b.EndObject()
        sgv, codev, bufv = table_vec([sg]), table_vec(code_offs), table_vec(buf_offs)
        desc = b.CreateString("kmodelpy test builder")
        b.StartObject(8)
        b.PrependUint32Slot(0, version, 0)
        b.PrependUOffsetTRelativeSlot(1, codev, 0)
        b.PrependUOffsetTRelativeSlot(2, sgv, 0)
        b.PrependUOffsetTRelativeSlot(3, desc, 0)
        b.PrependUOffsetTRelativeSlot(4, bufv, 0)
        b.Finish(b.EndObject(), file_identifier=b"TFL3")
        return bytes(b.Output())

    def save(self, path, inputs, outputs) -> str:
        with open(path, "wb") as f:
            f.write(self.build(inputs, outputs))
        return str(path)
