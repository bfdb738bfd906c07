"""Where batch cases run: in this process, in a local process pool, or on a Dask distributed cluster.

One interface, ``results(function, items)``: submit ``function(item)`` for every item and yield
``(item, result, error)`` as each finishes (``error`` is the exception when the task itself could not run,
e.g. a worker process died). Scheduling, retries of lost workers and scale-out are the engines' own: this
module only adapts concurrent.futures and distributed to that one shape. dask/distributed are imported only
when a Dask executor is made.
"""

import concurrent.futures
import multiprocessing
import os

from .errors import InputError


def _limit_threads(threads):
    """Give each worker process its share of the cores instead of every process claiming all of them."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)


class InProcessExecutor:
    """Runs the cases one after another in this process (``--workers 1``)."""

    name = "in-process"

    def results(self, function, items):
        for item in items:
            try:
                yield item, function(item), None
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as exc:
                yield item, None, exc

    def close(self):
        pass


class LocalProcessExecutor:
    """A pool of ``workers`` processes on this machine (spawned, so no torch state is forked)."""

    name = "local processes"

    def __init__(self, workers, threads_per_worker=None):
        threads = threads_per_worker or max(1, (os.cpu_count() or 1) // workers)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_limit_threads, initargs=(threads,))

    def results(self, function, items):
        futures = {self.pool.submit(function, item): item for item in items}
        try:
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                yield futures[future], (None if error else future.result()), error
        finally:
            for future in futures:
                future.cancel()

    def close(self):
        self.pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor:
    """Cases as tasks on a Dask distributed cluster: an existing scheduler (``address``, e.g. started by
    dask-jobqueue on SLURM/PBS or dask-kubernetes), or a LocalCluster of ``workers`` processes."""

    name = "dask"

    def __init__(self, address=None, workers=1):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError(None, "--executor dask needs dask distributed: pip install \"tace-response[batch]\"")
        self.cluster = None
        try:
            if address:
                self.client = Client(address, timeout="10s")
            else:
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
                self.client = Client(self.cluster)
        except (OSError, TimeoutError) as exc:
            raise InputError(address, "cannot reach the Dask scheduler: {}".format(str(exc).splitlines()[0]))
        self.name = "dask at {}".format(self.client.scheduler.address)

    def results(self, function, items):
        from distributed import as_completed

        items = list(items)
        # pure=False: a case is an action with side effects (files), never deduplicated or cached by Dask
        futures = self.client.map(function, items, pure=False)
        by_key = {future.key: item for future, item in zip(futures, items)}
        try:
            for future in as_completed(futures):
                error = future.exception()
                yield by_key[future.key], (None if error else future.result()), error
        finally:
            self.client.cancel(futures)

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


def make_executor(kind, workers=1, scheduler=None):
    if kind == "dask":
        return DaskExecutor(scheduler, workers)
    if scheduler:
        raise InputError(None, "--scheduler needs --executor dask")
    if workers <= 1:
        return InProcessExecutor()
    return LocalProcessExecutor(workers)
