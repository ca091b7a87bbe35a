"""ncc's buffer allocators: lifetimes counted in ages, then first-fit placement (compiler spec §9.1–§9.3).

One :class:`MemoryAllocator` per memory space (const, main, KPU). While the scheduler walks the
compute sequence (see :mod:`kmodelpy.compiler.schedule`) it calls :meth:`MemoryAllocator.allocate`
(birth = the allocator's current age, one reference), :meth:`Buffer.add_ref`, :meth:`MemoryAllocator.grow_age`
after every node, and :meth:`Buffer.release`. A buffer's ``age`` counts the steps during which it was
referenced, so it is live on ages ``[birth, birth + age)``.

:meth:`MemoryAllocator.finish` then places the buffers with ncc's **first-fit** method
(memory_allocator.cpp ``finish`` with the solver disabled, freelist.cpp). ncc's default at codegen is an
OR-tools CP-SAT layout, which is neither deterministic nor reproducible; the reference outputs were
produced with first fit (``--max-allocator-solve-secs 0``), so kmodelpy always uses first fit and only
accepts the solve-seconds option for command-line compatibility. Addresses never change numerics.

:meth:`MemoryAllocator.place_by_size` is kmodelpy's second placement, used only for KPU RAM and only
when first fit would overflow it (docs/deviations.md): largest buffer first, each at the lowest
address where it overlaps no buffer placed so far that is live at the same time. It needs no more
than the peak of the live bytes on the usual schedules, where first fit can leave holes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

KPU_RAM_BYTES = 2 * 1024 * 1024  # the K210's KPU RAM (compiler spec §6.1, kpu_memory_allocator.cpp)


def align(size: int, alignment: int) -> int:
    """Round ``size`` up to a multiple of ``alignment`` (memory_allocator.cpp ``align``)."""
    rem = size % alignment
    return size if rem == 0 else size - rem + alignment


class FreeList:
    """ncc's growable free list (freelist.cpp), address-ordered, initially empty with heap end 0.

    * :meth:`allocate`: the lowest-address free block with ``size >= requested``; an exact fit is
      removed, a larger block is **shrunk from the top and its upper part returned**. If nothing fits
      and the highest free block ends at the heap end, that block is grown to exactly ``size`` (the heap
      end grows by the difference) and returned whole; otherwise a new block is made at the heap end.
    * :meth:`free`: insert the block and merge it with adjacent free neighbours.
    * ``heap_end`` is the allocator's maximum usage.
    """

    def __init__(self):
        self.blocks: list[list[int]] = []  # sorted [start, size]
        self.heap_end = 0

    def _reserve(self, size: int) -> int:
        for k, (_, bsize) in enumerate(self.blocks):
            if bsize >= size:
                return k
        if self.blocks:
            last = self.blocks[-1]
            if last[0] + last[1] == self.heap_end:
                grow = size - last[1]
                last[1] += grow
                self.heap_end += grow
                return len(self.blocks) - 1
        self.blocks.append([self.heap_end, size])
        self.heap_end += size
        return len(self.blocks) - 1

    def allocate(self, size: int) -> int:
        k = self._reserve(size)
        start, bsize = self.blocks[k]
        if bsize == size:
            del self.blocks[k]
            return start
        self.blocks[k][1] = bsize - size
        return start + bsize - size

    def free(self, start: int, size: int) -> None:
        k = 0
        while k < len(self.blocks) and self.blocks[k][0] < start:
            k += 1
        self.blocks.insert(k, [start, size])
        # merge with the right neighbour, then with the left one
        if k + 1 < len(self.blocks) and self.blocks[k + 1][0] == start + size:
            self.blocks[k][1] += self.blocks[k + 1][1]
            del self.blocks[k + 1]
        if k > 0 and self.blocks[k - 1][0] + self.blocks[k - 1][1] == self.blocks[k][0]:
            self.blocks[k - 1][1] += self.blocks[k][1]
            del self.blocks[k]

    @property
    def max_usage(self) -> int:
        return self.heap_end


@dataclass(eq=False)
class Buffer:
    """One allocation (ncc's ``memory_node``): ``size`` is aligned, ``valid_size`` the tensor's bytes."""

    allocator: "MemoryAllocator"
    birth: int
    valid_size: int
    size: int
    label: str = ""  # who owns it (layer/tensor name), for reports and errors
    refs: int = 0
    age: int = 0
    start: int | None = None

    def add_ref(self) -> None:
        self.refs += 1

    def release(self) -> None:
        self.refs -= 1
        if self.refs < 0:
            raise RuntimeError(f"buffer of {self.label!r} released more often than referenced")

    @property
    def used(self) -> bool:
        return self.refs > 0

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass(eq=False)
class MemoryAllocator:
    """Buffers of one memory space. ``alignment`` 8 (const/main) or 64 (KPU); ``limit`` is the KPU's
    2 MiB (checked by the scheduler, which names the layer that does not fit)."""

    name: str
    alignment: int = 8
    limit: int | None = None
    age: int = 0
    buffers: list[Buffer] = field(default_factory=list)
    max_usage: int = 0

    def allocate(self, size: int, label: str = "") -> Buffer:
        buf = Buffer(self, self.age, size, align(size, self.alignment), label)
        buf.add_ref()
        self.buffers.append(buf)
        return buf

    def grow_age(self) -> None:
        self.age += 1
        for b in self.buffers:
            if b.used:
                b.age += 1

    def finish(self) -> int:
        """First-fit placement (memory_allocator.cpp ``finish``): for ages t = 0, 1, ... visit the
        buffers in creation order, allocating those born at t and freeing those whose life ends at t.
        Sets every ``start`` and returns ``max_usage`` (the heap end)."""
        fl = FreeList()
        t = 0
        placed = 0
        while placed < len(self.buffers):
            for b in self.buffers:
                if t == b.birth:
                    b.start = fl.allocate(b.size)
                    placed += 1
                if t == b.birth + b.age:
                    fl.free(b.start, b.size)
            t += 1
        self.max_usage = fl.max_usage
        return self.max_usage

    def place_by_size(self) -> int:
        """Largest first (ties: earlier birth, then creation order): each buffer goes to the lowest
        address where it overlaps no already placed buffer whose lifetime meets its own. Sets every
        ``start`` and returns ``max_usage``."""
        placed: list[Buffer] = []
        order = sorted(range(len(self.buffers)), key=lambda k: (-self.buffers[k].size, self.buffers[k].birth, k))
        for k in order:
            b = self.buffers[k]
            busy = sorted((p.start, p.end) for p in placed if p.birth < b.birth + b.age and b.birth < p.birth + p.age)
            start = 0
            for lo, hi in busy:
                if start + b.size <= lo:
                    break
                start = max(start, hi)
            b.start = start
            placed.append(b)
        self.max_usage = max((b.end for b in self.buffers), default=0)
        return self.max_usage

    def peak_live(self) -> tuple[int, int]:
        """(age, bytes) of the first age at which the live buffers' sizes add up to the most: no
        placement can use less than these bytes."""
        end = max((b.birth + b.age for b in self.buffers), default=0)
        live = [0] * (end + 1)
        for b in self.buffers:
            for t in range(b.birth, b.birth + b.age):
                live[t] += b.size
        t = max(range(len(live)), key=lambda k: (live[k], -k))
        return t, live[t]

    def live_at(self, age: int) -> list[Buffer]:
        return [b for b in self.buffers if b.birth <= age < b.birth + b.age]

    def overflow(self) -> Buffer | None:
        """The first buffer (in creation order) that ends beyond ``limit``, if any (after :meth:`finish`)."""
        if self.limit is None or self.max_usage <= self.limit:
            return None
        for b in self.buffers:
            if b.end > self.limit:
                return b
        return None
