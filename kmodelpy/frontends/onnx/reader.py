"""Read an ONNX model with the ``onnx`` package into a plain Python view (:class:`OnnxFile`).

The ``onnx`` package (the ecosystem's standard reader) parses the protobuf and ``onnx.checker`` checks it;
everything is then converted eagerly into plain Python / numpy objects so the importer never touches
protobuf messages:

* :class:`Node`: index, op_type, name, inputs/outputs (tensor names; ``""`` for an absent optional input)
  and ``attrs`` (attribute name -> Python value: int, float, str, list, or a numpy array for a tensor);
* :class:`ValueInfo`: name, element type name ("FLOAT", "INT64", ...), dims (ints; a symbolic dimension is
  its parameter name as a string, an unknown one ``None``);
* :class:`OnnxFile`: nodes (graph order), initializers (name -> numpy array), inputs (graph inputs that are
  not initializers), outputs, opset (the default domain's version), path.

External-data weights are loaded from the model's folder; a missing data file is a one-line error naming the
tensor and the file. Errors are :class:`kmodelpy.errors.FormatError` naming the file. ``onnx`` is imported
here only, on first use (``import kmodelpy`` stays cheap).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import FormatError, InputError, UnsupportedError
from ..builder import first_line


@dataclass
class Node:
    index: int
    op_type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict = field(default_factory=dict)
    domain: str = ""


@dataclass
class ValueInfo:
    name: str
    elem_type: str
    dims: tuple | None  # None: rank unknown


@dataclass
class OnnxFile:
    path: str
    nodes: list[Node]
    initializers: dict[str, np.ndarray]
    inputs: list[ValueInfo]
    outputs: list[ValueInfo]
    opset: int
    producer: str = ""

    def consumers(self) -> dict[str, list[int]]:
        """tensor name -> indices of the nodes reading it (graph order)."""
        out: dict[str, list[int]] = {}
        for n in self.nodes:
            for t in n.inputs:
                if t:
                    out.setdefault(t, []).append(n.index)
        return out

    def producers(self) -> dict[str, int]:
        """tensor name -> index of the node writing it."""
        return {t: n.index for n in self.nodes for t in n.outputs if t}


def _elem_name(code: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(code)
    except ValueError:
        return f"type {code}"


def _value_info(vi) -> ValueInfo:
    t = vi.type
    if not t.HasField("tensor_type"):
        return ValueInfo(vi.name, "non-tensor", None)
    tt = t.tensor_type
    if not tt.HasField("shape"):
        return ValueInfo(vi.name, _elem_name(tt.elem_type), None)
    dims = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param"):
            dims.append(str(d.dim_param))
        else:
            dims.append(None)
    return ValueInfo(vi.name, _elem_name(tt.elem_type), tuple(dims))


def _attr_value(a):
    from onnx import helper, numpy_helper

    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", "replace") for s in v]
    if a.type == a.TENSOR:
        return numpy_helper.to_array(v)
    if isinstance(v, list):
        return list(v)
    return v


def _load_external(model, folder: Path, path: Path) -> None:
    """Load external-data tensors from ``folder``; a missing file is one line naming tensor and file."""
    from onnx import external_data_helper as ext

    tensors = [t for t in ext._get_all_tensors(model) if ext.uses_external_data(t)]
    for t in tensors:
        info = ext.ExternalDataInfo(t)
        f = folder / info.location
        if not f.is_file():
            raise FormatError(f"{path}: the weights of tensor '{t.name}' are stored in the external file "
                              f"'{info.location}', which is missing; put it next to the model (or re-export "
                              "without external data: onnx.save(model, path, save_as_external_data=False))")
    if tensors:
        try:
            ext.load_external_data_for_model(model, str(folder))
        except Exception as e:  # noqa: BLE001 - a truncated data file and the like
            raise FormatError(f"{path}: cannot read the external weights ({first_line(e)})") from None


def read_onnx(path) -> OnnxFile:
    """Read and check ``path`` (an .onnx file). Raises FormatError / UnsupportedError (one line)."""
    import onnx

    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an .onnx file")
    try:
        buf = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except OSError as e:
        raise FormatError(f"{p}: cannot read the file ({e.strerror or e})") from None
    try:
        model = onnx.load_model_from_string(buf)
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise FormatError(f"{p}: not an ONNX model (the protobuf does not parse: {first_line(e)})") from None
    if model.ir_version <= 0 or not model.HasField("graph") or not (model.graph.node or model.graph.output):
        raise FormatError(f"{p}: not an ONNX model (no graph in it); export one with torch.onnx.export")
    _load_external(model, p.parent, p)
    return parse_model(model, str(p))


def parse_model(model, name: str = "<onnx>") -> OnnxFile:
    """Check an ``onnx.ModelProto`` (external data already loaded) and convert it (see :func:`read_onnx`)."""
    import onnx
    from onnx import numpy_helper

    p = name
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001 - onnx.checker.ValidationError
        raise FormatError(f"{p}: the ONNX checker rejects the model: {first_line(e)}") from None
    g = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inits = {}
    for t in g.initializer:
        try:
            inits[t.name] = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001
            raise UnsupportedError(f"{p}: initializer '{t.name}' cannot be read ({first_line(e)})") from None
    for t in g.sparse_initializer:
        raise UnsupportedError(f"{p}: sparse initializer '{t.values.name}' is not supported; export dense weights")
    nodes = []
    for i, n in enumerate(g.node):
        try:
            attrs = {a.name: _attr_value(a) for a in n.attribute}
        except Exception as e:  # noqa: BLE001
            raise FormatError(f"{p}: node #{i} '{n.name}' ({n.op_type}): unreadable attribute "
                              f"({first_line(e)})") from None
        nodes.append(Node(i, n.op_type, n.name, list(n.input), list(n.output), attrs, n.domain))
    inputs = [_value_info(v) for v in g.input if v.name not in inits]
    outputs = [_value_info(v) for v in g.output]
    return OnnxFile(p, nodes, inits, inputs, outputs, opset, model.producer_name)
