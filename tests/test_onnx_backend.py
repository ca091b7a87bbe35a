"""The ONNX backend test suite inside the installed ``onnx`` package (node cases, pytorch-converted,
pytorch-operator), every case whose operators kmodelpy supports, on the float evaluator
(``tests/onnx_backend.py`` says how). Every such case must pass or be refused with one line (a variant
kmodelpy does not support: integer inputs, 1-D/3-D convolutions, cubic resize ...); none may compute a wrong
result or crash.

docs/onnx_backend_tests.md lists the outcome of every case; it is written by this test
(``KMODELPY_WRITE_BACKEND_DOC=1 pytest tests/test_onnx_backend.py``) and checked against it whenever the
installed ``onnx`` is the version the list was made with.
"""
from __future__ import annotations

import os
from collections import Counter

import pytest

from onnx_backend import all_cases, run_case
from refcases import ROOT

DOC = ROOT / "docs" / "onnx_backend_tests.md"


@pytest.fixture(scope="module")
def outcomes():
    return [(c, *run_case(c)) for c in all_cases()]


def _doc_text(outcomes) -> str:
    import onnx

    count = Counter(o for _, o, _ in outcomes)
    kinds = Counter(c.kind for c, o, _ in outcomes if o == "pass")
    lines = ["# The ONNX backend tests on kmodelpy's float evaluator", "",
             f"Written by `tests/test_onnx_backend.py` with onnx {onnx.__version__}: every case of the backend test "
             "suite shipped in the `onnx` package (`onnx.backend.test.case.node`, the node cases "
             "`collect_testcases()` returns, and the `pytorch-converted` / `pytorch-operator` data cases) whose "
             "operators kmodelpy's ONNX front end supports, evaluated by `kmodelpy.load` and compared with the "
             "expected outputs within each case's rtol/atol. Node cases feed their weights as graph inputs; where "
             "an operand must be a constant, the case runs with inputs 1.. bound as initializers (\"constant "
             "operands\"), as a K210 model has them.", "",
             f"**{count['pass']} pass** ({kinds['node']} node, {kinds['pytorch-converted']} pytorch-converted, "
             f"{kinds['pytorch-operator']} pytorch-operator), **{count['refused']} refused** with a one-line reason "
             f"(a variant outside what kmodelpy supports), **{count['FAIL']} fail**.", "",
             "| case | suite | outcome | note |", "|---|---|---|---|"]
    for c, o, d in sorted(outcomes, key=lambda t: (t[1] != "pass", t[0].kind, t[0].name)):
        lines.append(f"| {c.name} | {c.kind} | {o} | {d.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def test_backend_cases_pass_or_are_refused(outcomes):
    bad = [(c.kind, c.name, d) for c, o, d in outcomes if o == "FAIL"]
    assert not bad, f"{len(bad)} backend cases compute a wrong result or crash: {bad[:10]}"
    count = Counter(o for _, o, _ in outcomes)
    assert count["pass"] >= 350, count
    passed = {c.name for c, o, _ in outcomes if o == "pass"}
    for must in ("test_conv_with_strides_padding", "test_maxpool_2d_ceil", "test_averagepool_2d_pads_count_include_pad",
                 "test_resize_upsample_scales_linear", "test_batchnorm_example", "test_gemm_default_single_elem_vector_bias",
                 "test_Conv2d_groups", "test_BatchNorm2d_eval", "test_softmax_axis_1", "test_convtranspose"):
        assert must in passed, must


def test_backend_doc_is_current(outcomes):
    import onnx

    text = _doc_text(outcomes)
    if os.environ.get("KMODELPY_WRITE_BACKEND_DOC") == "1":
        DOC.write_text(text)
    recorded = DOC.read_text()
    if f"with onnx {onnx.__version__}:" in recorded:  # another onnx release has other cases
        assert recorded == text, "docs/onnx_backend_tests.md is out of date: KMODELPY_WRITE_BACKEND_DOC=1 pytest " \
                                 "tests/test_onnx_backend.py"
