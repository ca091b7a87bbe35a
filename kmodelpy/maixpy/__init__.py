"""MaixPy v1 on the PC: stand-ins for the modules K210 scripts import (``KPU``, ``image``, ``sensor``,
``lcd``, ``time``, ``gc``, ``Maix``...), emulated with kmodelpy's bit-exact kmodel runtime, and MaixPy's
YOLOv2 region layer on its own::

    from kmodelpy.maixpy import yolo2_region
    objs = yolo2_region(fmap, w, h, ch, anchors, threshold, nms, net_w, net_h)   # what kpu.run_yolo2 returns

``kmodelpy maixpy script.py --camera FOLDER`` runs a script unchanged; ``kmodelpy detect`` runs the region
layer on pictures. Nothing heavy is imported until used.
"""


def __getattr__(name):
    if name in ("yolo2_region", "Yolo2Object", "RegionLayerError"):
        from . import region

        return getattr(region, name)
    raise AttributeError(f"module 'kmodelpy.maixpy' has no attribute {name!r}")


__all__ = ["yolo2_region", "Yolo2Object", "RegionLayerError"]
