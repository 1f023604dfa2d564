"""A bound on the request-body bytes one worker holds at once.

Bodies are buffered while they are read, then verified and committed; a
request is admitted only if its body (its Content-Length, or the body limit
when it is chunked) fits in what is left, else it gets 429 at once, before
its body is read. So no sequence of valid requests can push a worker's memory
past a ceiling set by this bound (README, "Memory").
"""

from __future__ import annotations


class BodyBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> bool:
        """Reserve `size` bytes; False (nothing reserved) if they do not fit."""
        if self.held + size > self.limit:
            return False
        self.held += size
        return True

    def give_back(self, size: int) -> None:
        self.held -= size
