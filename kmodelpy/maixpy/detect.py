"""``kmodelpy detect model.kmodel PICTURES... --anchors ...``: MaixPy's YOLOv2 region layer on pictures,
without a script.

Each picture is read as ``kmodelpy run`` reads it (``.bin``/``.raw``: raw CHW samples; else decoded,
scaled to the model input with INTER_LINEAR, planes R, G, B), run on the bit-exact emulator, and output 0
goes through ``kpu.run_yolo2``'s region layer (:mod:`.region`) with the grid of the model's output
shape. The boxes are printed (class, label, score, x, y, w, h in model-input pixels), optionally drawn
(``--draw``, boxes as MaixPy's draw_rectangle draws them) and written as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..errors import InputError
from . import session
from .kpu import output_sizes
from .lcd import write_whole
from .region import RegionLayerError, check_yolo2_args, run_region_layer

RAW_SUFFIXES = (".bin", ".raw")
_PALETTE = [(255, 0, 0), (0, 255, 0), (0, 128, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0),
            (128, 0, 255), (255, 255, 255)]


def configure_parser(p) -> None:
    p.add_argument("model", help="a YOLOv2 .kmodel (v4, or v3 where supported)")
    p.add_argument("pictures", nargs="+", help="pictures; .bin/.raw files are raw CHW samples")
    p.add_argument("--anchors", required=True, metavar="A1,A2,...",
                   help="the flat anchor list of kpu.init_yolo2 (w, h pairs, in grid cells)")
    p.add_argument("--threshold", type=float, default=0.5, help="init_yolo2's threshold (default 0.5)")
    p.add_argument("--nms", type=float, default=0.3, help="init_yolo2's nms_value (default 0.3)")
    p.add_argument("--classes", type=int, metavar="N",
                   help="class count; default MaixPy v1's ch/5 - 5 (which assumes 5 anchors)")
    p.add_argument("--labels", metavar="FILE", help="class names: one per line, or comma-separated")
    p.add_argument("--draw", metavar="OUTDIR", help="write each picture with its boxes drawn (PNG)")
    p.add_argument("--json", metavar="FILE", help="write every box as JSON")


def _anchors(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise InputError(f"--anchors {text!r}: give numbers separated by commas (w1,h1,w2,h2,...)") from None
    if not vals or len(vals) % 2:
        raise InputError(f"--anchors: {len(vals)} values; give a (w, h) pair for each anchor")
    return vals


def _labels(path) -> list[str]:
    if path is None:
        return []
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"--labels {p}: cannot read: {e.strerror or e}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) == 1 and "," in lines[0]:
        return [v.strip() for v in lines[0].split(",")]
    return lines


def grid_of(model, path) -> tuple[int, int, int]:
    """(w, h, ch) of output 0: what MaixPy's region layer uses: kmodel v3: the last KPU conv's output
    (lib_sipeed_kpu.a); v4: set_outputs' slot 0, i.e. the output's shape, read from the model."""
    from .kpu import _v3_info

    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"\x03\x00\x00\x00":
        shape = _v3_info(data)[2]
        if shape is not None:
            return shape
    shape = list(model.output_shapes()[0])
    if len(shape) == 4:
        return shape[3], shape[2], shape[1]
    raise InputError(f"{path}: output 0 has shape {shape}, not a C x H x W grid: not a YOLOv2 region-layer output")


def _picture(path: Path, model):
    """The model input (CHW) and an RGB picture of it to draw on."""
    from ..images import load_input

    shape = [int(d) for d in model.input_shape]
    c, h, w = shape[1:]
    fmt = "raw" if path.suffix.lower() in RAW_SUFFIXES else "image"
    x = load_input(path, fmt, model.input_dtype, (c, h, w), 0.0, 1.0)
    planes = np.asarray(x)
    if planes.dtype != np.uint8:
        planes = np.clip(planes * 255.0, 0, 255).astype(np.uint8)
    rgb = planes.transpose(1, 2, 0) if c == 3 else np.repeat(planes[0][:, :, None], 3, axis=2)
    return x, np.ascontiguousarray(rgb)


def _draw(rgb: np.ndarray, objs, labels, out: Path) -> None:
    from .image import Image
    from .lcd import write_png

    img = Image._from_rgb888(rgb)
    for o in objs or []:
        color = _PALETTE[o.classid() % len(_PALETTE)]
        img.draw_rectangle(o.rect(), color=color, thickness=2)
        name = labels[o.classid()] if o.classid() < len(labels) else str(o.classid())
        img.draw_string(o.x() + 2, max(o.y() - 12, 0) if o.y() >= 12 else o.y() + 3, f"{name} {o.value():.2f}",
                        color=color, scale=1)
    write_png(out, img._rgb888())


def main(args) -> int:
    from .. import load

    from .. import is_source_path

    model_path = Path(args.model)
    if not model_path.is_file():
        raise InputError(f"{model_path}: no such file")
    if is_source_path(model_path):
        raise InputError(f"{model_path}: detect runs a kmodel (compile it first: kmodelpy compile {model_path.name} ...)")
    anchors = _anchors(args.anchors)
    try:
        thr, nms, anc = check_yolo2_args(args.threshold, args.nms, len(anchors) // 2, anchors)
    except ValueError as e:
        raise InputError(f"{e} (--threshold/--nms)") from None
    labels = _labels(args.labels)
    outdir = Path(args.draw) if args.draw else None
    if outdir is not None and outdir.exists() and not outdir.is_dir():
        raise InputError(f"--draw {outdir}: exists and is not a folder")
    pictures = [Path(p) for p in args.pictures]
    for p in pictures:
        if not p.is_file():
            raise InputError(f"{p}: no such file")
    model = load(model_path)
    w, h, ch = grid_of(model, model_path)
    net_w, net_h = int(model.input_shape[3]), int(model.input_shape[2])
    report = []
    with session.warning_lines():
        for p in pictures:
            x, rgb = _picture(p, model)
            model.run(x)
            raw = model.output_bytes()
            buf = np.frombuffer(raw[: output_sizes(model)[0] // 4 * 4], dtype="<f4").copy()
            try:
                objs = run_region_layer(buf, w, h, ch, anc, thr, nms, net_w, net_h, args.classes)
            except RegionLayerError as e:
                raise InputError(f"{model_path}: {e}") from None
            _print(p, objs, labels)
            if outdir is not None:
                _draw(rgb, objs, labels, outdir / f"{p.stem}.png")
            report.append({"picture": str(p), "objects": [_as_dict(o, labels) for o in objs or []]})
    if args.json:
        write_whole(Path(args.json), (json.dumps(report, indent=1) + "\n").encode())
    return 0


def _as_dict(o, labels) -> dict:
    d = {"x": o.x(), "y": o.y(), "w": o.w(), "h": o.h(), "classid": o.classid(), "value": o.value()}
    if o.classid() < len(labels):
        d["label"] = labels[o.classid()]
    return d


def _print(path: Path, objs, labels) -> None:
    n = len(objs) if objs else 0
    print(f"{path}: {n} object(s)")
    for o in objs or []:
        name = labels[o.classid()] if o.classid() < len(labels) else "-"
        print(f"  class {o.classid():3d} {name:<14} {o.value():.4f}  x {o.x():4d} y {o.y():4d} w {o.w():4d} h {o.h():4d}")
    sys.stdout.flush()
