"""The ``kmodelpy`` command: ``infer``, ``run``, ``inspect``, ``demo``, ``compile``, ``compare``...

``infer`` writes the same files as ``ncc infer`` (runtime spec §E). Every user error (a
:class:`~kmodelpy.errors.KmodelpyError`) is printed as one ``error: ...`` line on stderr with exit
status 2 and no traceback; an unexpected exception is reported as a kmodelpy bug (status 1, with
the traceback only when ``KMODELPY_DEBUG=1``).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from .errors import InputError, KmodelpyError, UnsupportedError

RAW_SUFFIXES = (".bin", ".raw")


# ---------------------------------------------------------------------------- helpers
def _load_model(path, member=None):
    """``kmodelpy.load`` with a missing file reported in one line (``member``: a .kfpkg's kmodel)."""
    from . import load

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    return load(p, member=member)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, then rename: never a partial file."""
    from .files import write_atomic

    write_atomic(path, data)


def _make_outdir(path) -> Path:
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(f"{p}: output path exists and is not a folder") from None
    except OSError as e:
        raise InputError(f"{p}: cannot create the output folder: {e.strerror or e}") from None
    return p


def _output_bytes(model, outputs) -> bytes:
    """What ``ncc infer`` writes: every output range raw, concatenated (kmodel), or the float
    outputs concatenated (a .tflite reference model)."""
    import numpy as np

    if hasattr(model, "output_bytes"):
        return model.output_bytes()
    return b"".join(np.ascontiguousarray(o).tobytes() for o in outputs)


def _input_chw(model):
    from .images import model_chw

    return model_chw(model.input_shape)


def _batch(model, samples):
    """The [N, C, H, W] tensor ``ncc infer`` builds from N samples. ncc v0.2.0-beta4 writes every
    sample of a batch into slot 0 (so slot 0 holds the batch's last sample) and leaves the other
    slots uninitialised (spec §E caveat); kmodelpy does the same with zeros in the other slots."""
    import numpy as np

    shape = [int(d) for d in model.input_shape]
    x = np.zeros(shape, dtype=samples[-1].dtype)
    x[0] = samples[-1].reshape(shape[1:])
    return x


def _kernel_failure(model) -> None:
    err = getattr(model, "last_error", None)
    if err:
        print(f"Fatal: {err}", file=sys.stderr)


# ---------------------------------------------------------------------------- infer
def cmd_infer(args) -> int:
    from .images import list_dataset, load_input
    from .parallel import free_cores, map_ordered, one_blas_thread

    model = _load_model(args.model, args.member)
    files = list_dataset(args.dataset, args.dataset_format)
    n = max(1, int(model.input_shape[0]))
    files = files[: len(files) - len(files) % n]
    if not files:
        raise InputError(f"{args.dataset}: the dataset has fewer files than the model's batch size {n}")
    if n > 1:
        print(
            f"warning: {args.model}: input batch {n} > 1: like ncc infer, each output uses only the last "
            "file of its batch (ncc v0.2 bug)", file=sys.stderr,
        )
    c, h, w = _input_chw(model)
    dtype = model.input_dtype
    if args.dataset_format == "raw":  # check every size first: no output at all for a bad dataset
        from .images import load_raw

        for f in files:
            load_raw(f, dtype, (c, h, w))
    groups = [files[b : b + n] for b in range(0, len(files), n)]
    spare = [model]  # the first worker runs the model loaded above, each other one loads its own

    def worker_model():
        try:
            return spare.pop()  # (atomic: one worker gets it)
        except IndexError:
            return _load_model(args.model, args.member)

    def infer(m, group):
        samples = [load_input(f, args.dataset_format, dtype, (c, h, w), args.input_mean, args.input_std)
                   for f in group]
        outputs = m.run(_batch(m, samples))
        return _output_bytes(m, outputs), getattr(m, "last_error", None)

    outdir = None
    jobs = args.jobs or free_cores()
    with one_blas_thread:
        # results come back in file order: the same files, messages and first failure as one job
        for group, (data, err) in zip(groups, map_ordered(infer, groups, jobs, worker_model)):
            if err:
                print(f"Fatal: {err}", file=sys.stderr)
            outdir = outdir or _make_outdir(args.outdir)
            _atomic_write(outdir / f"{group[0].stem}.bin", data)
    print(f"kmodelpy infer: {len(files)} file(s) -> {args.outdir}")
    return 0


# ---------------------------------------------------------------------------- run
def _summary(o) -> str:
    import numpy as np

    a = np.asarray(o)
    shape = "x".join(map(str, a.shape)) or "scalar"
    flat = a.reshape(-1)
    head = f"  shape {shape} {a.dtype}"
    if flat.size == 0:
        return head + ": empty"
    if flat.size == 1:
        return head + f": {flat[0]:.6g}" if a.dtype.kind == "f" else head + f": {flat[0]}"
    vector = sum(d > 1 for d in a.shape) <= 1
    if vector:
        k = min(5, flat.size)
        order = np.argsort(-flat.astype(np.float64), kind="stable")[:k]
        top = ", ".join(f"[{i}] {flat[i]:.6g}" for i in order)
        return head + f": top-{k} {top}"
    ff = flat.astype(np.float64)
    first = " ".join(f"{v:.4g}" for v in flat[:6])
    return head + f": min {ff.min():.6g} max {ff.max():.6g} mean {ff.mean():.6g}; first values {first} ..."


def cmd_run(args) -> int:
    from .images import load_input

    model = _load_model(args.model, args.member)
    c, h, w = _input_chw(model)
    dtype = model.input_dtype
    outdir = _make_outdir(args.save) if args.save else None
    for f in args.inputs:
        p = Path(f)
        fmt = "raw" if p.suffix.lower() in RAW_SUFFIXES else "image"
        x = load_input(p, fmt, dtype, (c, h, w), args.input_mean, args.input_std)
        outputs = model.run(_batch(model, [x]))
        _kernel_failure(model)
        print(f"{p}:")
        for i, o in enumerate(outputs):
            print(f" output {i}:" + _summary(o)[1:])
        if outdir is not None:
            _atomic_write(outdir / f"{p.stem}.bin", _output_bytes(model, outputs))
    return 0


# ---------------------------------------------------------------------------- inspect
def cmd_inspect(args) -> int:
    from . import is_source_path

    p = Path(args.model)
    if is_source_path(p):
        if not p.exists():
            raise InputError(f"{p}: no such file")
        from .fit_report import report

        print(report(str(p), args.weights_quantize_threshold, args.output_quantize_threshold))
        return 0
    from .inspect_kmodel import describe_file

    print(describe_file(p, args.member))
    return 0


# ---------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    """The whole job on bundled data: compile the bundled line follower (reference case
    line_follower_kpu: MobileNet v1 0.25, 160x160) with the bundled calibration images, then run the
    kmodel kmodelpy wrote, the kmodel ncc wrote (emulated like ``ncc infer``) and the float TFLite model
    on the bundled test pictures, side by side."""
    import json
    import tempfile

    import numpy as np

    from . import compile as compile_tflite
    from .images import load_image_f32, load_image_u8

    data = Path(__file__).resolve().parent / "data"
    tflite = data / "line_follower.tflite"
    calib = data / "calib"
    ncc_model = _load_model(data / "line_follower.kmodel")
    c, h, w = _input_chw(ncc_model)
    n_calib = len(list(calib.glob("*.png")))
    print(f"1. kmodelpy compile {tflite.name} --dataset {calib.name}/ ({n_calib} images)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "line_follower.kmodel"
        compile_tflite(str(tflite), dataset=str(calib), output=str(out))
        ours = _load_model(out)
    float_model = _load_model(tflite)
    refs_path = data / "line_follower_refs.json"
    refs = json.loads(refs_path.read_text()) if refs_path.exists() else {}
    print("2. steering in [-1, 1] on the test pictures:")
    print(f"   {'picture':<14}{'kmodelpy kmodel':>17}{'ncc kmodel':>13}{'float TFLite':>14}   ncc kmodel vs ncc infer")
    for png in sorted(data.glob("*.png")):
        x_u8 = load_image_u8(png, c, h, w)
        mine = float(np.asarray(ours.run(x_u8)[0]).reshape(-1)[0])
        theirs = np.float32(np.asarray(ncc_model.run(x_u8)[0]).reshape(-1)[0])
        flt = float(np.asarray(float_model.run(load_image_f32(png, c, h, w, 0.0, 1.0))[0]).reshape(-1)[0])
        ref = refs.get(png.name, {})
        same = ""
        if "ncc_infer" in ref:
            same = "bit-exact" if np.float32(ref["ncc_infer"]).tobytes() == theirs.tobytes() else "DIFFERS"
        print(f"   {png.name:<14}{mine:>+17.5f}{float(theirs):>+13.5f}{flt:>+14.5f}   {same}")
    print("(the kmodelpy kmodel is calibrated on the bundled subset, ncc's on 300 images: they differ a little)")
    return 0


# ---------------------------------------------------------------------------- parser
def _add_norm(p) -> None:
    p.add_argument("--input-mean", type=float, default=0.0, metavar="M",
                   help="float inputs: v = (v - M) / S after scaling pixels to [0, 1] (default 0)")
    p.add_argument("--input-std", type=float, default=1.0, metavar="S", help="see --input-mean (default 1)")


def _add_member(p) -> None:
    p.add_argument("--member", metavar="NAME",
                   help=".kfpkg: the kmodel to use, by name or flash address (0x300000), when it holds several")


def _add_compile(sub, load: bool) -> None:
    """Register `compile`. kmodelpy.compiler.cli (written separately) is imported only when the
    command is `compile` (keeps `kmodelpy run` start-up fast)."""
    if not load:
        p = sub.add_parser("compile", help="compile a float .tflite or .onnx to kmodel v4 (like ncc compile)",
                           add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        return
    try:
        from .compiler import cli as ccli
    except ModuleNotFoundError as e:
        if not (e.name or "").startswith("kmodelpy"):
            raise
        missing = e.name
        p = sub.add_parser("compile", help="compile a float .tflite or .onnx to kmodel v4 (not available)",
                           add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=lambda a: _unavailable(f"compile: the compiler is not available in this kmodelpy ({missing})"))
        return
    p = sub.add_parser("compile", help="compile a float .tflite or .onnx to kmodel v4 (like ncc compile)")
    ccli.configure_parser(p)
    p.set_defaults(func=ccli.main)


def _add_lazy(sub, name: str, module: str, text: str, load: bool) -> None:
    """Register a command whose module (with configure_parser and main) is imported only when it runs."""
    if not load:
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        return
    import importlib

    mod = importlib.import_module(module, __package__)
    p = sub.add_parser(name, help=text)
    mod.configure_parser(p)
    p.set_defaults(func=mod.main)


_LAZY = (("maixpy", ".maixpy.runner", "run an unmodified MaixPy v1 script with a folder of pictures as the camera"),
         ("detect", ".maixpy.detect", "MaixPy's YOLOv2 region layer (kpu.run_yolo2) on pictures: boxes, drawn"),
         ("compare", ".accuracy.cli", "where a kmodel loses accuracy against its float model, layer by layer"))


def _unavailable(msg: str) -> int:
    raise UnsupportedError(msg)


def build_parser(argv=None) -> argparse.ArgumentParser:
    from .parallel import add_jobs_option

    ap = argparse.ArgumentParser(
        prog="kmodelpy",
        description="Compile TFLite or ONNX for the K210 KPU and emulate kmodel v4 bit for bit like ncc infer "
                    "(and kmodel v3 like the K210 SDK).",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("infer", help="like `ncc infer`: one .bin of raw outputs per dataset file")
    p.add_argument("model", help=".kmodel v4/v3, .kfpkg (or .tflite / .onnx for the float reference)")
    p.add_argument("outdir", help="output folder (created if missing)")
    p.add_argument("--dataset", required=True, help="a folder (walked recursively, sorted) or one file")
    p.add_argument("--dataset-format", choices=("image", "raw"), default="image",
                   help="image: files OpenCV decodes; raw: CHW files of exactly C*H*W input elements")
    _add_norm(p)
    _add_member(p)
    add_jobs_option(p, "run the pictures")
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("run", help="run images (or raw .bin files) and print the outputs")
    p.add_argument("model", help=".kmodel v4/v3, .kfpkg (or .tflite / .onnx)")
    p.add_argument("inputs", nargs="+", help="images; .bin/.raw files are read as raw CHW samples")
    p.add_argument("--save", metavar="DIR", help="also write DIR/<stem>.bin as `infer` does")
    _add_norm(p)
    _add_member(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("inspect", help="describe a kmodel v4/v3 (ops, memory, MaixPy hints), a .kfpkg or a "
                       ".tflite/.onnx's fit")
    p.add_argument("model")
    p.add_argument("--weights-quantize-threshold", type=float, default=64.0, help=".tflite/.onnx: as for compile")
    p.add_argument("--output-quantize-threshold", type=int, default=1024, help=".tflite/.onnx: as for compile")
    _add_member(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("demo", help="compile the bundled line follower and run it next to ncc's kmodel and float")
    p.set_defaults(func=cmd_demo)

    argv = sys.argv[1:] if argv is None else list(argv)
    _add_compile(sub, load=bool(argv) and argv[0] == "compile")
    for name, module, text in _LAZY:
        _add_lazy(sub, name, module, text, load=bool(argv) and argv[0] == name)
    return ap


def main(argv=None) -> int:
    from .parallel import one_blas_thread

    one_blas_thread.pin_from_start()  # before numpy is imported: OpenBLAS with one thread
    debug = os.environ.get("KMODELPY_DEBUG") == "1"
    try:
        args = build_parser(argv).parse_args(argv)
    except SystemExit as e:  # --help, or a usage error argparse already printed
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        return int(args.func(args) or 0)
    except KmodelpyError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if debug:
            import traceback

            traceback.print_exc()
        print(
            f"internal error (a kmodelpy bug, please report it): {type(e).__name__}: "
            f"{' '.join(str(e).split())} (set KMODELPY_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
