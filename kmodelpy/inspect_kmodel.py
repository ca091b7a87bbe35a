"""``kmodelpy inspect``: what a kmodel v4 holds and whether it fits a K210 under MaixPy.

Reports the header (version, target), an opcode histogram (flagging the opcodes older MaixPy
firmware freezes on), inputs and outputs (dtype, NCHW shape, memory range), the main memory and
the KPU RAM high-water (the highest KPU byte touched by any range or layer, runtime spec §G)
against the K210 limits, and the ``kpu.set_outputs`` line MaixPy needs for each output.
"""
from __future__ import annotations

from collections import Counter

from .format.binio import DATATYPE_NAMES, MEM_CONST, MEM_KPU, MEM_MAIN, MEMORY_TYPE_NAMES
from .format.kmodel import KModel

MB = 1 << 20
K210_MAIN_RAM = 6 * MB
K210_KPU_RAM = 2 * MB
MAIXPY_USABLE = int(3.5 * MB)
# Opcodes the MaixPy firmware only runs correctly from its nncase v0.2.0-beta3 based builds on.
NEEDS_BETA3 = {0x12: "TableLookup1D", 0x14: "NNILUnaryMethod"}
TARGETS = {0: "CPU", 1: "K210"}


def _ranges(km: KModel):
    yield from km.inputs
    yield from km.outputs
    for op in km.ops:
        yield from (r for r in op.inputs() if r is not None)
        yield from (r for r in op.outputs() if r is not None)


def summarize(km: KModel, file_size: int | None = None, path: str = "model") -> dict:
    """The facts ``inspect`` prints, as a dict (shapes come from the producing nodes)."""
    from .runtime import Model

    hist = Counter((op.opcode, op.name) for op in km.ops)
    kpu_hw = main_hw = 0
    for r in _ranges(km):
        if r.size == 0:
            continue
        if r.memory_type == MEM_KPU:
            kpu_hw = max(kpu_hw, r.start + r.size)
        elif r.memory_type == MEM_MAIN:
            main_hw = max(main_hw, r.start + r.size)
    try:
        out_shapes = Model(km, path).output_shapes()
    except Exception:  # noqa: BLE001 - a damaged model still gets described
        out_shapes = [[r.size // r.itemsize] for r in km.outputs]
    return {
        "version": km.version,
        "target": km.target,
        "file_size": file_size,
        "nodes": len(km.nodes),
        "constants": len(km.constants),
        "main_mem": km.main_mem,
        "main_high_water": main_hw,
        "kpu_high_water": kpu_hw,
        "ops": sorted(((code, name, n) for (code, name), n in hist.items())),
        "needs_beta3": sorted(code for code, _ in hist if code in NEEDS_BETA3),
        "inputs": [(r, list(s)) for r, s in zip(km.inputs, km.input_shapes)],
        "outputs": list(zip(km.outputs, out_shapes)),
    }


def _mr(r) -> str:
    mem = {MEM_MAIN: "main", MEM_KPU: "KPU RAM", MEM_CONST: "const"}.get(r.memory_type, MEMORY_TYPE_NAMES.get(r.memory_type, f"mem{r.memory_type}"))
    return f"{mem} [{r.start}, {r.start + r.size}) {r.size} B"


def _nchw(shape) -> list[int]:
    s = [int(d) for d in shape]
    return [1] * (4 - len(s)) + s if len(s) < 4 else s[-4:]


def _size(n: int) -> str:
    return f"{n} B ({n / MB:.2f} MB)"


def describe(km: KModel, file_size: int | None = None, path: str = "model") -> str:
    s = summarize(km, file_size, path)
    lines = [
        f"{path}: kmodel v{s['version']}, target {TARGETS.get(s['target'], '?')} ({s['target']}), "
        f"{s['nodes']} nodes, constants {s['constants']} B" + (f", file {file_size} B" if file_size else ""),
        "ops:",
    ]
    for code, name, n in s["ops"]:
        flag = ""
        if code in NEEDS_BETA3:
            flag = "  [!] needs MaixPy firmware with nncase v0.2.0-beta3 or newer (older MaixPy freezes on it)"
        lines.append(f"  0x{code:04X} {name:<28} x{n}{flag}")
    for i, (r, shape) in enumerate(s["inputs"]):
        dt = DATATYPE_NAMES.get(r.datatype, f"dt{r.datatype}")
        fed = "" if i == 0 else " (never fed by ncc infer)"
        lines.append(f"input {i}: {dt} {'x'.join(map(str, shape))} (NCHW) in {_mr(r)}{fed}")
    for i, (r, shape) in enumerate(s["outputs"]):
        dt = DATATYPE_NAMES.get(r.datatype, f"dt{r.datatype}")
        lines.append(f"output {i}: {dt} {'x'.join(map(str, shape))} in {_mr(r)}")
    main, kpu = s["main_mem"], s["kpu_high_water"]
    lines += [
        "memory:",
        f"  main memory: {_size(main)} of the K210's 6 MB"
        + ("  [!] too large" if main > K210_MAIN_RAM else ""),
        f"  KPU RAM high-water: {_size(kpu)} of 2 MB" + ("  [!] too large" if kpu > K210_KPU_RAM else ""),
    ]
    if file_size:
        total = file_size + main
        verdict = "fits" if total <= MAIXPY_USABLE else "[!] probably does NOT fit"
        lines.append(
            f"  under MaixPy: model file {file_size} B + main memory {main} B = {_size(total)} "
            f"of ~3.5 MB usable: {verdict}"
        )
    lines.append("MaixPy (kpu.set_outputs(task, output index, w, h, ch)):")
    for i, (_, shape) in enumerate(s["outputs"]):
        n, c, h, w = _nchw(shape)
        lines.append(f"  kpu.set_outputs(task, {i}, {w}, {h}, {n * c})")
    return "\n".join(lines)


def describe_bytes(data: bytes, path: str = "model") -> str:
    """The description of kmodel bytes: v4, or v3 (:mod:`kmodelpy.v3.inspect`)."""
    from .v3.kmodel import KModelV3, is_kmodel_v3

    if is_kmodel_v3(data):
        from .v3.inspect import describe as describe_v3

        return describe_v3(KModelV3.parse(data, path), len(data), path)
    return describe(KModel.parse(data, path), len(data), path)


def describe_file(path, member: str | None = None) -> str:
    """``kmodelpy inspect`` of a .kmodel (v4 or v3) or a .kfpkg (``member`` picks one kmodel in it)."""
    from .errors import read_user_file
    from .kfpkg import describe_kfpkg, is_kfpkg

    if is_kfpkg(path):
        return describe_kfpkg(path, member)
    return describe_bytes(read_user_file(path, "a .kmodel file"), str(path))
