"""What every simulated part with a thread or a socket shares: ``start``/``stop`` and the
``with`` statement that pairs them."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class StartStop:
    """A part that is started and must be stopped; ``with part:`` does both."""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
