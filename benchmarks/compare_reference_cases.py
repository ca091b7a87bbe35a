"""Run ``kmodelpy compare`` on every compile reference case (reference/ncc_outputs/cases/*/model.tflite and the
ONNX cases' model.onnx),
with the case's own compile options (its ncc_args), on its inputs/ (raw; the calibration set where ncc refused
the model and wrote none), against ncc's kmodel when there is one. Prints one line per case: layers or outputs mode (layers when kmodelpy writes ncc's bytes), the worst
layer cosine, each output's cosine, and the time. Cases whose compile fails as ncc's does (a one-line
error) are listed with the error. Run: ``python benchmarks/compare_reference_cases.py [--limit N]``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CASES = ROOT / "reference" / "ncc_outputs" / "cases"


def case_options(case: Path):
    from kmodelpy.compiler.cli import ncc_args_options

    return ncc_args_options(json.loads((case / "case.json").read_text())["ncc_args"][2:], case)


def main() -> None:
    import kmodelpy

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=4, help="pictures per case (default 4)")
    a = ap.parse_args()
    models = sorted(CASES.glob("*/model.tflite")) + sorted(CASES.glob("*/model.onnx"))
    counts = {"layers": 0, "outputs": 0, "error": 0}
    for model in models:
        case = model.parent
        calib, fmt, opts = case_options(case)
        ncc = case / "ncc.kmodel"
        t = time.perf_counter()
        inputs = case / "inputs"  # (absent where ncc refused the model: compare on the calibration set)
        pictures, pfmt = (inputs, "raw") if inputs.exists() else (calib, fmt)
        try:
            r = kmodelpy.compare(model, pictures, kmodel=ncc if ncc.exists() else None,
                                 calibration_dataset=calib, calibration_format=fmt, dataset_format=pfmt,
                                 limit=a.limit, **opts)
        except kmodelpy.KmodelpyError as e:
            counts["error"] += 1
            print(f"{case.name:40s} error: {' '.join(str(e).split())[:150]}")
            continue
        counts[r.mode] += 1
        worst = min((x.cosine for x in r.layers if x.mapped and x.cosine is not None), default=None)
        outs = " ".join(f"{o.cosine:.5f}" for o in r.outputs)
        worst_s = f"worst layer cosine {worst:.5f}" if worst is not None else "(outputs only)"
        print(f"{case.name:40s} {r.mode:7s} {worst_s:28s} outputs {outs}  {time.perf_counter() - t:5.1f} s",
              flush=True)
    print(f"{len(models)} cases: {counts['layers']} layer by layer, {counts['outputs']} outputs only, "
          f"{counts['error']} one-line errors")


if __name__ == "__main__":
    main()
