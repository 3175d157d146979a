"""What the appliance's routes share: the application's keys, the typed faces of the
services behind them, and the TSA counts of every process added up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from appliance.clock.timekeeper import Timekeeper
from appliance.issuance.issuer import TsaService, TsaTally


@dataclass(frozen=True)
class ServerConfig:
    max_request_bytes: int = 16 * 1024  # a TimeStampReq is < 200 bytes; 16 KiB is generous
    simulate: bool = False


TIMEKEEPER = web.AppKey("timekeeper", Timekeeper)
TSA = web.AppKey("tsa", TsaService)
CONFIG = web.AppKey("server_config", ServerConfig)


class FaultControl(Protocol):
    """What ``/sim/faults`` needs of the simulated world (drivers.sim.world.SimWorld)."""

    def faults_json(self) -> dict[str, Any]: ...

    def set_faults_json(self, data: Any) -> Any:
        """Apply ``data``; ValueError (the world's FaultError) for a fault it cannot apply."""

    def clear_faults(self) -> None: ...


WORLD = web.AppKey("sim_world", FaultControl)


class WorkerStatus(Protocol):
    """What ``/metrics`` needs of the TSA worker processes
    (``appliance.runtime.workers.WorkerPool``)."""

    @property
    def size(self) -> int: ...

    @property
    def restarts(self) -> int: ...

    def alive(self) -> int: ...

    def stats(self) -> TsaTally: ...


WORKERS = web.AppKey("tsa_workers", WorkerStatus)
STARTED = web.AppKey("started_monotonic", float)


def tsa_tally(app: web.Application) -> TsaTally:
    """The counts of every process that answers ``POST /tsa``: this one and its workers."""
    tally = app[TSA].tally()
    workers = app.get(WORKERS)
    if workers is not None:
        tally.add(workers.stats())
    return tally
