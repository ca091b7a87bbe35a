"""The ONNX backend test suite shipped inside the installed ``onnx`` package, run on kmodelpy's float evaluator.

* node cases: ``onnx.backend.test.case.node`` — one model, inputs and expected outputs per operator variant
  (``collect_testcases()`` builds them by importing one module per operator; only the modules of the
  operators kmodelpy supports are imported here, which keeps the collection to a few seconds);
* data cases: ``onnx/backend/test/data/pytorch-converted`` and ``pytorch-operator`` (PyTorch layers exported
  to ONNX, with ``test_data_set_*/input_*.pb`` and ``output_*.pb``).

A case is *supported* when every operator of its model is. :func:`run_case` imports the model with
:func:`kmodelpy.frontends.onnx.reader.parse_model` and evaluates it; node cases feed weights as graph inputs,
so when the import says an operand must be a constant, the case is run again with inputs 1.. bound as
initializers (the data tensor stays the graph input), as a K210 model would have them. Outcomes: "pass"
(every output within the case's rtol/atol, as the ONNX backend runner checks), "refused" (a one-line
:class:`kmodelpy.errors.KmodelpyError`: a variant outside what kmodelpy supports) or "FAIL".
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Case:
    kind: str  # "node", "pytorch-converted", "pytorch-operator"
    name: str
    model: object  # onnx.ModelProto
    data_sets: list  # [(inputs, outputs)]
    rtol: float = 1e-3
    atol: float = 1e-7


def _supported_ops() -> set[str]:
    from kmodelpy.frontends.onnx.importer import supported_operators

    return set(supported_operators())


def _model_ops(model) -> set[str]:
    return {n.op_type for n in model.graph.node}


def node_cases() -> list[Case]:
    import warnings

    import onnx.backend.test.case.node as node_pkg

    ops = {o.lower() for o in _supported_ops()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in pkgutil.iter_modules(node_pkg.__path__):
            if m.name.replace("_", "") in ops:
                importlib.import_module(f"{node_pkg.__name__}.{m.name}")
    supported = _supported_ops()
    out = []
    for c in node_pkg._NodeTestCases:  # what collect_testcases() returns, for the imported modules
        if _model_ops(c.model) <= supported:
            out.append(Case("node", c.name, c.model, c.data_sets, c.rtol, c.atol))
    return sorted(out, key=lambda c: c.name)


def data_cases(kind: str) -> list[Case]:
    import onnx
    from onnx import numpy_helper

    root = Path(onnx.__file__).parent / "backend" / "test" / "data" / kind
    supported = _supported_ops()
    out = []
    for d in sorted(root.glob("test_*")):
        model = onnx.load(str(d / "model.onnx"))
        if not _model_ops(model) <= supported:
            continue
        sets = []
        for ds in sorted(d.glob("test_data_set_*")):
            def load(prefix):
                files = sorted(ds.glob(f"{prefix}_*.pb"), key=lambda f: int(f.stem.split("_")[-1]))
                tensors = []
                for f in files:
                    t = onnx.TensorProto()
                    t.ParseFromString(f.read_bytes())
                    tensors.append(numpy_helper.to_array(t))
                return tensors
            sets.append((load("input"), load("output")))
        out.append(Case(kind, d.name, model, sets))
    return out


def _bind_constants(model, inputs):
    """A copy of ``model`` whose graph inputs 1.. are initializers holding ``inputs[1:]``."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    names = [i.name for i in m.graph.input]
    for name, value in zip(names[1:], inputs[1:]):
        if value is not None:
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    if m.ir_version >= 4:  # older IR versions list initializers among the graph inputs
        keep = [i for i in m.graph.input[:1]]
        del m.graph.input[:]
        m.graph.input.extend(keep)
    return m


def _evaluate(model, inputs, name):
    from kmodelpy.frontends.float_model import FloatModel
    from kmodelpy.frontends.onnx.importer import import_onnx
    from kmodelpy.frontends.onnx.reader import parse_model

    fm = FloatModel(name, import_onnx(parse_model(model, name)))
    n_in = len(fm.graph.inputs)
    return fm.run(*[np.asarray(x) for x in inputs[:n_in]])


def run_case(case: Case) -> tuple[str, str]:
    """(outcome, detail) of one case: "pass", "refused" or "FAIL"."""
    from kmodelpy.errors import KmodelpyError

    detail = ""
    for inputs, expected in case.data_sets:
        odd = [np.asarray(x).dtype for x in inputs if np.asarray(x).dtype.kind not in "fiub"]
        if odd:
            return "refused", f"input of type {odd[0]}"
        try:
            try:
                got = _evaluate(case.model, inputs, case.name)
            except KmodelpyError:
                if len(inputs) < 2:
                    raise
                got = _evaluate(_bind_constants(case.model, inputs), inputs[:1], case.name)
                detail = "constant operands"
        except KmodelpyError as e:
            msg = str(e).split(": ", 1)[-1]
            return "refused", msg.split("; supported:")[0][:150]
        except Exception as e:  # noqa: BLE001 - a kmodelpy bug: reported, the test fails
            return "FAIL", f"{type(e).__name__}: {e}"[:200]
        if len(got) != len(expected):
            return "FAIL", f"{len(got)} outputs, expected {len(expected)}"
        for k, (y, r) in enumerate(zip(got, expected)):
            r = np.asarray(r)
            if r.dtype.kind not in "fiub":
                return "refused", f"output {k} is {r.dtype}"
            y = np.asarray(y, np.float64).reshape(-1)
            r = r.astype(np.float64).reshape(-1)
            if y.size != r.size:
                return "FAIL", f"output {k} has {y.size} values, expected {r.size}"
            if not np.allclose(y, r, rtol=case.rtol, atol=case.atol, equal_nan=True):
                err = float(np.nanmax(np.abs(y - r))) if y.size else 0.0
                return "FAIL", f"output {k} differs by up to {err:.3g}"
    return "pass", detail


def all_cases() -> list[Case]:
    return node_cases() + data_cases("pytorch-converted") + data_cases("pytorch-operator")
