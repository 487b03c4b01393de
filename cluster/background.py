"""The driver's background event loop: the rollout of the next iteration runs there while the
learner trains on this one."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Future, ThreadPoolExecutor


class BackgroundLoop:
    """One worker thread running coroutines on its own event loop; ``cancel()`` from the main thread
    cancels what runs there (a rollout in flight when Ctrl-C or SIGTERM arrives) and joins it."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollout")
        self.loop: asyncio.AbstractEventLoop | None = None

    def submit(self, make_coro) -> Future:
        def run():
            self.loop = asyncio.new_event_loop()
            try:
                return self.loop.run_until_complete(make_coro())
            finally:
                self.loop.close()
        return self.pool.submit(run)

    def cancel(self) -> None:
        loop = self.loop
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing left to cancel
            loop and loop.call_soon_threadsafe(lambda: [t.cancel() for t in asyncio.all_tasks(loop)])
        self.pool.shutdown(wait=True, cancel_futures=True)
