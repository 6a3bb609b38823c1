"""A bounded, closeable FIFO (Python 3.11's queue.Queue has no shutdown).

close() wakes every blocked put() and get(); after it, put() returns False and get() raises
Closed once the queue is empty. clear() drops everything (used on seek), so a consumer that
peeks removes what it peeked with pop_if_head(), never get(). One lock and one
condition protect `_items` and `_closed`.
"""

from __future__ import annotations

import collections
import threading
import time


class Closed(Exception):
    pass


class ClosableQueue:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._items: collections.deque = collections.deque()
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item, timeout: float | None = None) -> bool:
        """Block while full. False if closed or timed out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._items) >= self.maxsize and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            if self._closed:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None):
        """Block while empty. Raises Closed when closed and drained; TimeoutError on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise Closed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def get_nowait(self):
        """The next item or None; never waits (safe in a real-time audio callback)."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def pop_if_head(self, item) -> bool:
        """Remove `item` if it is still at the head; False if it is not. A consumer that peeked,
        then decided, must not `get()` instead: a seek may have cleared the queue in between, and
        `get()` would block for, then swallow, the first frame after the seek."""
        with self._cond:
            if not self._items or self._items[0] is not item:
                return False
            self._items.popleft()
            self._cond.notify_all()
            return True

    def snapshot(self) -> list:
        with self._cond:
            return list(self._items)

    def peek(self):
        with self._cond:
            return self._items[0] if self._items else None

    def clear(self) -> None:
        with self._cond:
            self._items.clear()
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._items)
