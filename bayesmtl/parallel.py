"""The one distributed engine of bayesmtl: map a function over items, results as they finish.

Built on Dask's ``distributed`` (pure Python; a light local cluster by default, a real one
by address). Every parallel loop of the library goes through :func:`map_completed`:

========================  ===================================================================
``scheduler="serial"``    an in-process loop, no Dask (debugging, tests, one core)
``"threads"``             an in-process ``LocalCluster`` of ``n_workers`` threads, at most one
                          fewer than the CPUs this process may use (shares this process's
                          compiled JAX code and registered methods; JAX releases the GIL
                          while it computes; see :func:`thread_workers`)
``None`` / ``"local"``    a ``LocalCluster`` of ``n_workers`` single-threaded worker processes,
                          started and closed inside the call (no dashboard)
``"tcp://host:8786"``     a running Dask scheduler (``dask scheduler`` + ``dask worker``);
                          the workers must be able to import bayesmtl (same environment)
a ``distributed.Client``  an existing client, left open
========================  ===================================================================

``fn`` and the items travel to the workers by (cloud)pickle: use module-level functions (or
``functools.partial`` of them) so workers import them from bayesmtl. Local workers are
*spawned* processes (JAX does not survive ``fork``) that import the caller's main module: a
script that starts a local cluster needs the ``if __name__ == "__main__":`` guard.

A failing item raises :class:`WorkItemError` (naming the item, the original exception
chained) in the caller; the items still running are cancelled. Workers of a local cluster
that die are restarted and their items retried by the scheduler. Dask is imported only when
a cluster is used, so ``import bayesmtl`` stays free of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from .errors import WorkItemError

__all__ = ["map_completed", "thread_workers", "WorkItemError", "SCHEDULERS"]

SCHEDULERS = ("serial", "threads", "local")
#: logging level of the local cluster's scheduler and workers (INFO is a line per event)
LOG_LEVEL = logging.ERROR


def _describe(item: Any, limit: int = 120) -> str:
    text = repr(item)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _failure(desc: str, index: int, item: Any, err: BaseException) -> WorkItemError:
    what = f"{desc}: " if desc else ""
    return WorkItemError(f"{what}item {index} ({_describe(item)}) failed with "
                         f"{type(err).__name__}: {err}", index, item)


def map_completed(fn: Callable, items: Iterable, *, scheduler=None, n_workers: int = 2,
                  progress: bool = True, desc: str = "") -> Iterator[tuple[int, Any]]:
    """Yield ``(i, fn(items[i]))`` for every item, in order of completion.

    scheduler : "serial", None or "local" (a ``LocalCluster`` with ``n_workers`` processes,
        one thread each), a scheduler address string or a ``distributed.Client`` (module
        docstring).
    progress : a tqdm bar over the items (``desc`` its label, also used in error messages).
    Raises :class:`WorkItemError` for the first item that fails. Closing the generator early
    cancels what is left and shuts a cluster it started.
    """
    items = list(items)
    if isinstance(scheduler, str) and scheduler not in SCHEDULERS and "://" not in scheduler:
        from .errors import HyperparameterError

        raise HyperparameterError(f"scheduler must be 'serial', 'threads', 'local', None, an "
                                  f"address such as 'tcp://host:8786' or a distributed.Client;"
                                  f" got {scheduler!r}", "scheduler", scheduler)
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        from .errors import HyperparameterError

        raise HyperparameterError(f"n_workers must be an integer ≥ 1; got {n_workers!r}",
                                  "n_workers", n_workers)
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc=desc or None, disable=not progress) as bar:
        if scheduler == "serial":
            for i, item in enumerate(items):
                try:
                    result = fn(item)
                except Exception as err:
                    raise _failure(desc, i, item, err) from err
                bar.update()
                yield i, result
            return
        if not items:
            return
        with _client(scheduler, n_workers) as client:
            yield from _run_dask(client, fn, items, bar, desc)


def thread_workers(n_workers: int) -> int:
    """Threads the "threads" scheduler uses for ``n_workers``: at most one fewer than the CPUs
    this process may use (XLA's CPU thread pool has one thread per such CPU), and at least 1.

    A batched LAPACK kernel (Cholesky, eigh, … of a batch costing over 2e5 flops) splits its
    batch over that pool and waits for the pieces; XLA runs such a kernel on a pool thread.
    With as many fits in flight as pool threads, every pool thread can be waiting inside a
    kernel and none is left to run the pieces: a deadlock (three AMTL fits of School's size
    on two threads of this 2-core machine hung 2 of 2 times; gdb showed both pool threads in
    ``ParallelBatchMap``). One fit has at most one such kernel in flight (``solvers.after``;
    ``tests/test_hlo_hazards.py``), so fewer fits than pool threads always leave a thread
    free. Processes ("local") have a pool each and are not capped.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(int(n_workers), (cpus or 1) - 1))


@contextlib.contextmanager
def _client(scheduler, n_workers: int):
    """A ``distributed.Client``: the given one (left open) or one this opens and closes."""
    import distributed

    if isinstance(scheduler, distributed.Client):
        yield scheduler
        return
    if scheduler == "threads":
        with _quiet_config(), distributed.LocalCluster(
                n_workers=1, threads_per_worker=thread_workers(n_workers), processes=False,
                dashboard_address=None, silence_logs=LOG_LEVEL) as cluster, \
                distributed.Client(cluster) as client:
            yield client
        return
    if scheduler is None or scheduler == "local":
        # no dashboard; the scheduler's HTTP endpoints on a free local port (not 8787)
        with _quiet_config(), distributed.LocalCluster(
                n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                silence_logs=LOG_LEVEL) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    with distributed.Client(scheduler) as client:
        yield client


def _quiet_config():
    """Dask settings of a local cluster: no event-loop-blocked warnings (a worker compiling
    with JAX holds its loop for seconds), no memory-pressure spilling for small results."""
    import dask

    return dask.config.set({"distributed.admin.tick.limit": "1h",
                            "distributed.worker.memory.spill": False,
                            "distributed.worker.memory.target": False})


def _run_dask(client, fn, items, bar, desc) -> Iterator[tuple[int, Any]]:
    from distributed import as_completed

    futures = client.map(fn, items, pure=False)
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for future in as_completed(futures):
            i = index[future.key]
            if future.status == "error":
                err = future.exception()
                raise _failure(desc, i, items[i], err) from err
            if future.status == "cancelled":
                raise WorkItemError(f"{desc + ': ' if desc else ''}item {i} "
                                    f"({_describe(items[i])}) was cancelled (a worker lost?)",
                                    i, items[i])
            result = future.result()
            future.release()
            bar.update()
            yield i, result
    finally:
        client.cancel([f for f in futures if not f.done()])
