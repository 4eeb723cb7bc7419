"""A memory budget for images decoded ahead of the consumer, shared by the decoding threads.

Each image gets a `Ticket` in input order. Its decoder reserves the peak bytes decoding needs (known from the header,
before any pixel is decoded), shrinks the reservation to the bytes of the decoded image once done, and the consumer
releases the rest when it moves on. Reservations are granted in ticket order, so an early image never waits for a later
one (no deadlock however the threads are scheduled); an image whose peak alone exceeds the budget waits until
nothing else is reserved, then runs alone.
"""

from __future__ import annotations

import threading


class DecodeBudget:
    """At most ``limit`` bytes reserved at once, except by one image running alone."""

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"the decode budget must be positive, got {limit}")
        self.limit = int(limit)
        self.used = 0
        self._cond = threading.Condition()
        self._issued = 0
        self._turn = 0
        self._closed = False

    def ticket(self) -> Ticket:
        """The next ticket, in input order (call from the thread that orders the inputs)."""
        with self._cond:
            t = Ticket(self, self._issued)
            self._issued += 1
            return t

    def _reserve(self, seq: int, nbytes: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (
                self._turn == seq and (self.used == 0 or self.used + nbytes <= self.limit)))
            self.used += nbytes
            self._turn += 1
            self._cond.notify_all()

    def _pass(self, seq: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._turn == seq)
            self._turn += 1
            self._cond.notify_all()

    def close(self) -> None:
        """Stop waiting: every pending and future reservation is granted at once (the consumer has gone)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _give_back(self, nbytes: int) -> None:
        with self._cond:
            self.used -= nbytes
            self._cond.notify_all()


class Ticket:
    """One image's place in the budget: `reserve`, then `shrink` to what it keeps, then `release`."""

    def __init__(self, budget: DecodeBudget, seq: int) -> None:
        self.budget, self.seq = budget, seq
        self.held = 0
        self._taken = False
        self._holds = 0
        self._release_asked = False

    def reserve(self, nbytes: int) -> None:
        """Wait for this image's turn and for ``nbytes`` of room (or for an empty budget, if it needs more)."""
        self._taken = True
        self.budget._reserve(self.seq, nbytes)
        self.held = nbytes

    def shrink(self, nbytes: int) -> None:
        """Keep only ``nbytes`` reserved (the decoded image), giving back the rest."""
        if self.held > nbytes:
            self.budget._give_back(self.held - nbytes)
            self.held = nbytes

    def done(self) -> None:
        """The decoder is finished (successfully or not): pass the turn on if it never reserved."""
        if not self._taken:
            self._taken = True
            self.budget._pass(self.seq)

    def hold(self) -> None:
        """Keep the reservation past `release` until `unhold` (work on the image continues elsewhere, e.g. its
        full-resolution decode on another thread)."""
        with self.budget._cond:
            self._holds += 1

    def unhold(self) -> None:
        """End one `hold`; the reservation goes back now if the consumer has released the image meanwhile."""
        with self.budget._cond:
            self._holds -= 1
            pending = self._holds == 0 and self._release_asked
        if pending:
            self.shrink(0)

    def release(self) -> None:
        """The consumer is finished with the image (the reservation stays while it is held)."""
        self.done()
        with self.budget._cond:
            if self._holds:
                self._release_asked = True
                return
        self.shrink(0)
