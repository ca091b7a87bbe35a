"""docs/real_models.md: every model of a folder (the mediapipe 0.10.14 wheel's mediapipe/modules) compiled with the
default options and measured on the ordinary pictures of tests/data/pictures.

    python tools/real_models_table.py MODELS_DIR REFERENCES_DIR [--pictures DIR] [--out docs/real_models.md]

REFERENCES_DIR holds LiteRT's float outputs, ``<stem>.npz``, made beforehand with ai-edge-litert in its own
environment (never a kmodelpy dependency)::

    /work/refgen/venv/bin/python tools/litert_reference.py MODELS_DIR REFERENCES_DIR

For each model: input size; the float evaluation against LiteRT (largest error over the pictures / the output's
range, per output); ``kmodelpy compile`` (uint8, default options, the pictures as the dataset, the model's input
normalisation from the .npz — MediaPipe's own range — as --input-mean/--input-std); the kmodel's KPU / CPU layer
counts, main memory and KPU RAM high-water; the emulated kmodel's cosine against float per output over all the
pictures (the outputs of every picture concatenated). A model kmodelpy refuses gets its one-line message.
"""
from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


K210_MAIN = 6 * 1024 * 1024
#: hand-written, appended to the generated page: where each model loses accuracy (kmodelpy compare)
ACCURACY_NOTES = ROOT / "tools" / "real_models_notes.md"


def _nchw(y):
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB"


def measure(model: Path, refs: Path, pictures: list[Path], dataset: Path) -> dict:
    """Everything one table row needs (``refused`` holds the one-line message of a refusal)."""
    import kmodelpy
    from kmodelpy.compiler import compile_model
    from kmodelpy.errors import KmodelpyError
    from kmodelpy.format.kmodel import KModel
    from kmodelpy.images import load_image_f32, load_image_u8
    from kmodelpy.inspect_kmodel import summarize

    sys.path.insert(0, str(ROOT / "tools"))
    from litert_reference import mean_std

    row: dict = {"model": model.stem}
    npz = refs / f"{model.stem}.npz"
    ref = np.load(npz) if npz.exists() else None
    mean, std = (float(ref["mean"]), float(ref["std"])) if ref is not None else mean_std(model.stem)
    row["range"] = f"[{(0 - mean) / std:g}, {(1 - mean) / std:g}]"
    try:
        fm = kmodelpy.load(model)
    except KmodelpyError as e:
        row["refused"], row["refused_at"] = str(e).replace(str(model), model.name), "import"
        try:  # the input size as the file declares it
            from kmodelpy.frontends.tflite.reader import read_tflite

            tfl = read_tflite(model)
            n, h, w, c = tfl.tensors[tfl.inputs[0]].shape
            row["input"] = f"{w}x{h}x{c}"
        except (KmodelpyError, ValueError, IndexError):
            pass
        return row
    _, c, h, w = fm.input_shape
    row["input"] = f"{w}x{h}x{c}"
    if ref is not None:
        by_stem = {p.stem: p for p in pictures}
        names = [str(s) for s in ref["pictures"]]
        floats = [fm.run(load_image_f32(by_stem[s], c, h, w, mean, std)) for s in names]
        errs = []
        for k in range(len(floats[0])):
            span = float(np.ptp(ref[f"out{k}"])) or 1.0
            err = max(float(np.abs(f[k] - _nchw(ref[f"out{k}"][i][None]).reshape(f[k].shape)).max())
                      for i, f in enumerate(floats))
            errs.append(err / span)
        row["litert"] = errs
    else:
        names = [p.stem for p in pictures]
        floats = [fm.run(load_image_f32(p, c, h, w, mean, std)) for p in pictures]
    start = time.perf_counter()
    try:
        with redirect_stdout(io.StringIO()):
            data = compile_model(model, dataset=dataset, input_mean=mean, input_std=std)
    except KmodelpyError as e:
        row["refused"] = str(e).replace(str(model), model.name)
        return row
    row["compile_s"] = time.perf_counter() - start
    km = KModel.parse(data)
    kpu = sum(op.name == "KPUConv2D" for op in km.ops)
    row["kpu"], row["cpu"] = kpu, len(km.ops) - kpu
    s = summarize(km, len(data))
    row["main"], row["kpu_ram"], row["file"] = s["main_mem"], s["kpu_high_water"], len(data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{model.stem}.kmodel"
        path.write_bytes(data)
        em = kmodelpy.load(path)
        by_stem = {p.stem: p for p in pictures}
        got = [em.run(load_image_u8(by_stem[s], c, h, w)) for s in names]
    cos = []
    for k in range(len(got[0])):
        a = np.concatenate([f[k].ravel() for f in floats]).astype(np.float64)
        b = np.concatenate([g[k].ravel() for g in got]).astype(np.float64)
        cos.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    row["cosine"] = cos
    return row


def document(rows: list[dict], models: Path, n_pictures: int) -> str:
    """The whole of docs/real_models.md."""
    try:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    head = [
        "# Real-world models: the mediapipe 0.10.14 wheel",
        "",
        f"Every .tflite of `{models.name}/` (`pip download --no-deps mediapipe==0.10.14`, `mediapipe/modules/**`, "
        f"Apache-2.0), compiled by `kmodelpy compile` with the default options (uint8, calibrated on the {n_pictures} "
        "ordinary pictures of tests/data/pictures) and run on the same pictures. Generated by "
        f"`python tools/real_models_table.py MODELS_DIR REFERENCES_DIR --out docs/real_models.md` at commit {commit}; "
        "the LiteRT references come from `tools/litert_reference.py` (ai-edge-litert 2.3.0, its own environment).",
        "",
        "* **input range**: MediaPipe's own normalisation of the model input (its graphs' `ImageToTensorCalculator` "
        "`output_tensor_float_range`), given to the compiler as `--input-mean/--input-std`; the kmodel takes the "
        "uint8 pixels.",
        "* **float vs LiteRT**: kmodelpy's float evaluation (`kmodelpy.load(model.tflite)`) against LiteRT's "
        "interpreter on the same input tensors: the largest absolute error over the pictures divided by the "
        "output's range, per output (the target is 1e-4).",
        "* **KPU / CPU layers**: KPUConv2D ops / all other kmodel ops (uploads, downloads and (de)quantizations "
        "included); **main memory** and **KPU RAM**: the kmodel's working memory and KPU high-water (the K210 has "
        "6 MB and 2 MB; MaixPy leaves ~3.5 MB for model file + main memory; \"+ kmodel: over 6 MB\": main memory "
        "and the kmodel file, which must both be in RAM, together exceed 6 MB); **kmodel**: file size.",
        "* **cosine vs float**: the emulated kmodel (bit-exact with the K210) against the float evaluation, per "
        "output, over the outputs of all the pictures concatenated.",
        "",
    ]
    lines = ["| model | input (WxHxC) | input range | float vs LiteRT (max error / range) | KPU / CPU layers "
             "| main memory | KPU RAM | kmodel | cosine vs float |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lit = ", ".join(f"{e:.1e}" for e in r["litert"]) if "litert" in r else "no LiteRT reference"
        if r.get("refused_at") == "import":
            lines.append(f"| {r['model']} | {r.get('input', '')} | {r['range']} | refused (below) | | | | | |")
        elif "refused" in r:
            lines.append(f"| {r['model']} | {r['input']} | {r['range']} | {lit} | not compiled (below) | | | | |")
        else:
            cos = ", ".join(f"{c:.4f}" for c in r["cosine"])
            main = _kib(r["main"]) + (" (over 6 MB)" if r["main"] > K210_MAIN else
                                      " (+ kmodel: over 6 MB)" if r["main"] + r["file"] > K210_MAIN else "")
            lines.append(f"| {r['model']} | {r['input']} | {r['range']} | {lit} | {r['kpu']} / {r['cpu']} | "
                         f"{main} | {_kib(r['kpu_ram'])} | {_kib(r['file'])} | {cos} |")
    notes = [f"* **{r['model']}**: {r['refused']}" for r in rows if "refused" in r]
    return "\n".join(head + lines + (["", "Refused, in kmodelpy's own one-line words:", ""] + notes if notes else [])
                     + ["", ACCURACY_NOTES.read_text().strip()]) + "\n"


def main(argv=None) -> int:
    from kmodelpy.images import list_dataset

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, help="folder searched recursively for *.tflite")
    ap.add_argument("refs", type=Path, help="folder of LiteRT references <stem>.npz (tools/litert_reference.py)")
    ap.add_argument("--pictures", type=Path, default=ROOT / "tests/data/pictures")
    ap.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    a = ap.parse_args(argv)
    pictures = list_dataset(a.pictures)
    rows = []
    for model in sorted(a.models.rglob("*.tflite"), key=lambda p: p.stem):
        start = time.perf_counter()
        rows.append(measure(model, a.refs, pictures, a.pictures))
        print(f"{model.stem}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    text = document(rows, a.models, len(pictures))
    if a.out:
        a.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
