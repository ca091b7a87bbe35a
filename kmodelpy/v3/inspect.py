"""``kmodelpy inspect`` for kmodel v3: every layer with its type and where it runs (KPU or the K210's
CPU), the input the SDK feeds, the outputs, the main memory and KPU RAM high-water marks against the
K210's limits, and what MaixPy needs to run it."""
from __future__ import annotations

from collections import Counter

from ..errors import KmodelpyError
from ..format.binio import MEM_KPU, MEM_MAIN
from ..inspect_kmodel import K210_KPU_RAM, K210_MAIN_RAM, MAIXPY_USABLE, _size
from .kmodel import KModelV3

SDK_FEEDS = "kpu_run_kmodel feeds only a K210_CONV or FULLY_CONNECTED first layer"


def _high_water(km: KModelV3) -> tuple[int, int, int]:
    """(main high-water, lowest and highest KPU RAM byte) over every layer range and output
    (nncase v0.1 places KPU maps from the top of KPU RAM down)."""
    main = max((a + s for a, s in km.outputs), default=0)
    kpu_lo, kpu = 1 << 62, 0
    for layer in km.layers:
        try:
            ranges = list(layer.inputs()) + list(layer.outputs())
        except KmodelpyError:
            continue
        for r in ranges:
            if r.size and r.memory_type == MEM_MAIN:
                main = max(main, r.start + r.size)
            elif r.size and r.memory_type == MEM_KPU:
                kpu = max(kpu, r.start + r.size)
                kpu_lo = min(kpu_lo, r.start)
    return main, min(kpu_lo, kpu), kpu


def describe(km: KModelV3, file_size: int | None = None, path: str = "model") -> str:
    from .model import Model

    layers = km.layers
    n_kpu = sum(1 for layer in layers if layer.on_kpu)
    lines = [
        f"{path}: kmodel v3 (nncase v0.1; runs on the K210 SDK's kpu_run_kmodel), {len(layers)} layers "
        f"({n_kpu} KPU, {len(layers) - n_kpu} CPU), flags {km.flags}"
        + (" (8-bit weights)" if km.flags & 1 else " (16-bit weights)") + (f", file {file_size} B" if file_size else ""),
        f"  {'#':<4}{'layer type':<36}{'runs on':<9}what",
    ]
    for k, layer in enumerate(layers):
        lines.append(f"  {k:<4}{layer.name:<36}{'KPU' if layer.on_kpu else 'CPU':<9}{layer.summary()}")
    hist = Counter(layer.name for layer in layers)
    lines.append("types: " + ", ".join(f"{name} x{n}" for name, n in hist.most_common()))
    try:
        model = Model(km, path)
    except KmodelpyError as e:
        model = None
        lines.append(f"input: cannot be fed: {' '.join(str(e).split())}")
    shapes = model.output_shapes() if model else [[s // 4] for _, s in km.outputs]
    if model:
        shape = "x".join(map(str, model.input_shape))
        if layers[0].on_kpu:
            lines.append(f"input: uint8 {shape} (NCHW), a planar RGB/grey image uploaded to KPU RAM line "
                         f"{layers[0].layer_argument.image_src_addr}")
        else:
            lines.append(f"input: float32 {shape}: {model.input_shape[-1]} values copied to main memory "
                         f"[{model._place[0].start}, {model._place[0].start + model._place[0].size})")
    for i, ((address, size), shape) in enumerate(zip(km.outputs, shapes)):
        lines.append(f"output {i}: float32 {'x'.join(map(str, shape))} in main [{address}, {address + size}) {size} B")
    main_hw, kpu_lo, kpu_hw = _high_water(km)
    lines += [
        "memory:",
        f"  main memory: {_size(km.main_mem)} of the K210's 6 MB (high-water of the layers and outputs: {main_hw} B)"
        + ("  [!] too large" if km.main_mem > K210_MAIN_RAM else ""),
        f"  KPU RAM high-water: {_size(kpu_hw - kpu_lo)} of 2 MB, bytes [{kpu_lo}, {kpu_hw})"
        + ("  [!] too large" if kpu_hw > K210_KPU_RAM else "")
        + (f" (nncase v0.1 fills it from the top: header max_start_address {km.max_start_address} = the lowest line)"
           if km.max_start_address * 64 == kpu_lo else f" (header max_start_address {km.max_start_address})"),
    ]
    if file_size:
        total = file_size + km.main_mem
        verdict = "fits" if total <= MAIXPY_USABLE else "[!] probably does NOT fit"
        lines.append(f"  under MaixPy: model file {file_size} B + main memory {km.main_mem} B = {_size(total)} of "
                     f"~3.5 MB usable: {verdict}")
    lines.append("MaixPy: every MaixPy v1 firmware loads kmodel v3 (v0.5.x and older load only v3); no "
                 "kpu.set_outputs (that is for kmodel v4)")
    if model and layers[0].on_kpu:
        c, h, w = model.input_shape[1:]
        lines.append(f"  kpu.forward(task, img) with a {w}x{h} {'RGB' if c == 3 else 'grayscale' if c == 1 else f'{c}-channel'}"
                     " image (after img.pix_to_ai())")
    elif model:
        lines.append(f"  kpu.forward(task, [{model.input_shape[-1]} floats]) (a list: the first layer is not a "
                     "convolution, MaixPy refuses an image)")
    if len(shapes) > 1:
        lines.append(f"  output i: kpu.forward(task, x, i) (out_index, 0..{len(shapes) - 1})")
    return "\n".join(lines)
