"""KPU pooling (runtime spec §C.6) as numba kernels: the ten pool types on the activation output,
and the max/select pools applied to the conv result C before the activation where that is exact."""
from __future__ import annotations

import numba
import numpy as np

# pool_type -> stride (C.6)
POOL_STRIDE = (1, 2, 2, 4, 4, 2, 2, 4, 1, 1)


@numba.njit(cache=True)
def pool_plane(u, ih, iw, pool_type, dst):
    """Pool one channel ``u`` (flat ih*iw u8) into ``dst`` [OH, OW] (C.6)."""
    oh, ow = dst.shape
    if pool_type == 0:
        for y in range(oh):
            for x in range(ow):
                dst[y, x] = u[y * iw + x]
    elif pool_type == 1 or pool_type == 3:  # max_2_s2, max_4_s4
        s = 2 if pool_type == 1 else 4
        for y in range(oh):
            for x in range(ow):
                m = 0
                for ky in range(s):
                    row = (y * s + ky) * iw + x * s
                    for kx in range(s):
                        v = u[row + kx]
                        if v > m:
                            m = v
                dst[y, x] = m
    elif pool_type == 2 or pool_type == 4:  # mean_2_s2, mean_4_s4
        s = 2 if pool_type == 2 else 4
        for y in range(oh):
            for x in range(ow):
                acc = np.uint32(0)
                for ky in range(s):
                    row = (y * s + ky) * iw + x * s
                    for kx in range(s):
                        acc += np.uint32(u[row + kx])
                dst[y, x] = acc // np.uint32(s * s)
    elif pool_type == 5 or pool_type == 6 or pool_type == 7:  # left_top_2, right_top_2, left_top_4
        s = 4 if pool_type == 7 else 2
        dx = 1 if pool_type == 6 else 0
        for y in range(oh):
            for x in range(ow):
                dst[y, x] = u[(y * s) * iw + x * s + dx]
    elif pool_type == 8:  # mean_2_s1, edge replicated
        for y in range(oh):
            y1 = min(y + 1, ih - 1)
            for x in range(ow):
                x1 = min(x + 1, iw - 1)
                acc = (np.uint32(u[y * iw + x]) + np.uint32(u[y * iw + x1]) + np.uint32(u[y1 * iw + x])
                       + np.uint32(u[y1 * iw + x1]))
                dst[y, x] = acc // np.uint32(4)
    else:  # 9: max_2_s1, taps past the edge read as 0
        for y in range(oh):
            for x in range(ow):
                m = u[y * iw + x]
                if x + 1 < iw and u[y * iw + x + 1] > m:
                    m = u[y * iw + x + 1]
                if y + 1 < ih:
                    if u[(y + 1) * iw + x] > m:
                        m = u[(y + 1) * iw + x]
                    if x + 1 < iw and u[(y + 1) * iw + x + 1] > m:
                        m = u[(y + 1) * iw + x + 1]
                dst[y, x] = m


@numba.njit(cache=True)
def pool_c(cv, ih, iw, pool_type, use_min, dst):
    """Pool the pre-activation values C instead of U (flat ``dst`` of OH·OW): select pools take
    the same tap; max pools take the max (``use_min``: the min, when BN's multiplier is negative).
    Exact when the activation is monotone (C.6 max of a monotone function = function of the max)."""
    s = 4 if (pool_type == 3 or pool_type == 7) else (1 if pool_type == 9 else 2)
    oh, ow = ih // s, iw // s
    if pool_type >= 5 and pool_type <= 7:
        dx = 1 if pool_type == 6 else 0
        for y in range(oh):
            for x in range(ow):
                dst[y * ow + x] = cv[(y * s) * iw + x * s + dx]
        return
    if pool_type == 1 and not use_min:  # max_2_s2, the common case, unrolled
        for y in range(oh):
            r0 = (2 * y) * iw
            r1 = r0 + iw
            for x in range(ow):
                a = max(cv[r0 + 2 * x], cv[r0 + 2 * x + 1])
                b = max(cv[r1 + 2 * x], cv[r1 + 2 * x + 1])
                dst[y * ow + x] = max(a, b)
        return
    win = 2 if pool_type == 9 else s
    for y in range(oh):
        for x in range(ow):
            m = cv[(y * s) * iw + x * s]
            for ky in range(win):
                yy = y * s + ky
                if yy >= ih:
                    break
                for kx in range(win):
                    xx = x * s + kx
                    if xx >= iw:
                        break
                    v = cv[yy * iw + xx]
                    if use_min:
                        m = min(m, v)
                    else:
                        m = max(m, v)
            dst[y * ow + x] = m
