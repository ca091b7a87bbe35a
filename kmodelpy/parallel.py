"""Speed on a shared machine: one BLAS thread, and parallel work across pictures.

* :func:`one_blas_thread` -- the emulator's GEMMs run on the calling thread. OpenBLAS's own
  threads spin while they wait for work, for cores that other processes hold: on a busy 2-core
  machine that made a run 3-5x slower. Entered around every model run (cheap when already in
  force) and around whole CLI commands; the process's own BLAS setting is put back on leaving.
  The command line starts OpenBLAS with one thread instead (``pin_from_start``).
* :func:`map_ordered` -- ``work(state, item)`` for every item, in order, on ``jobs`` threads,
  ``state = init()`` made once per worker (a model loaded once per worker). The kernels release
  the GIL (numba ``nogil``, BLAS, OpenCV), so threads scale; idle workers block on a queue and
  never spin. The results come back in item order, so a caller writing one file per item writes
  exactly the files, bytes and messages of a single job, and stops at the same failing item.
* :func:`free_cores` -- the default job count: the cores this process may use less the load.
"""
from __future__ import annotations

import os
import sys
import threading
from collections import deque

_UNSET = object()


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def free_cores() -> int:
    """The cores not kept busy by other processes: available cores less the one-minute load
    average, rounded, at least 1."""
    n = available_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        load = 0.0
    return max(1, min(n, int(n - load + 0.5)))


def jobs_option(text: str) -> int:
    """argparse type of ``--jobs``: a positive number of workers."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        import argparse

        raise argparse.ArgumentTypeError(f"{text!r}: give a number of workers, 1 or more")
    return n


def add_jobs_option(parser, what: str) -> None:
    """Add ``--jobs N`` (default: :func:`free_cores` when the command starts) to an argparse parser."""
    parser.add_argument("--jobs", "-j", type=jobs_option, default=None, metavar="N",
                        help=f"{what} on N threads (default: the cores not busy with other processes; "
                             "the output is the same whatever N)")


def map_ordered(work, items, jobs: int = 1, init=None):
    """Yield ``work(state, item)`` for every item, in item order, computed on up to ``jobs``
    threads; ``state`` is ``init()`` made once per worker thread (None without ``init``). An
    exception (from ``init`` or ``work``) is raised where its item's result would come, after the
    results of every item before it; no item after it is started from then on."""
    items = list(items)
    jobs = max(1, min(int(jobs), len(items)))
    if jobs == 1:
        state = init() if init is not None else None
        for item in items:
            yield work(state, item)
        return
    from concurrent.futures import ThreadPoolExecutor  # (imported only here: it costs start-up)

    local = threading.local()

    def run(item):
        state = getattr(local, "state", _UNSET)
        if state is _UNSET:
            state = local.state = init() if init is not None else None
        return work(state, item)

    pool = ThreadPoolExecutor(jobs, thread_name_prefix="kmodelpy-job")
    try:
        pending = deque()
        rest = iter(items)
        for item in rest:  # a bounded window of items in flight: results are held in order
            pending.append(pool.submit(run, item))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            result = pending.popleft().result()
            item = next(rest, _UNSET)
            if item is not _UNSET:
                pending.append(pool.submit(run, item))
            yield result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class _OneBlasThread:
    """Reference-counted 'BLAS on one thread' for the whole process (threads may overlap): the
    first to enter sets every loaded BLAS library to one thread (threadpoolctl; the libraries are
    looked up again after imports), the last to leave puts the previous settings back."""

    def __init__(self):
        self._lock = threading.Lock()
        self._depth = 0
        self._libs = None  # threadpoolctl's controllers of the loaded BLAS libraries
        self._modules = -1  # len(sys.modules) when they were found: an import may bring another
        self._saved = ()
        self.from_start = False  # OpenBLAS was started with one thread (pin_from_start): nothing to do

    def pin_from_start(self) -> None:
        """Before numpy is first imported (the command line): OpenBLAS starts with one thread and
        no thread pool, so entering costs nothing and threadpoolctl is never imported."""
        if "numpy" not in sys.modules and "OPENBLAS_NUM_THREADS" not in os.environ:
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
            self.from_start = True

    def __enter__(self):
        if self.from_start:
            return self
        with self._lock:
            if self._depth == 0:
                if self._modules != len(sys.modules):
                    from threadpoolctl import ThreadpoolController

                    self._libs = ThreadpoolController().select(user_api="blas").lib_controllers
                    self._modules = len(sys.modules)
                saved = []
                for lib in self._libs:
                    n = lib.get_num_threads()
                    if n != 1:
                        lib.set_num_threads(1)
                        saved.append((lib, n))
                self._saved = tuple(saved)
            self._depth += 1
        return self

    def __exit__(self, *exc):
        if self.from_start:
            return False
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, n in self._saved:
                    lib.set_num_threads(n)
                self._saved = ()
        return False


one_blas_thread = _OneBlasThread()
