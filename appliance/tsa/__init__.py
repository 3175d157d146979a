"""The RFC 3161 time-stamp engine (pure: bytes, a time reading and a serial in; bytes out).

Public API::

    from appliance.tsa import TimeStampAuthority, FailInfo, Reply, reject
    tsa = TimeStampAuthority(credentials, policy_oid="1.3.6.1.4.1.99999.1")
    reply = tsa.respond(request_der, time=ensemble_reading, serial=allocator.next)
"""

from appliance.tsa.engine import Reply, TimeStampAuthority, gen_time_unit_ns, reject
from appliance.tsa.errors import FailInfo, PKIStatus, TimeNotAvailable, TsaError
from appliance.tsa.request import TimeStampRequest, parse_request

__all__ = [
    "FailInfo",
    "PKIStatus",
    "Reply",
    "TimeNotAvailable",
    "TimeStampAuthority",
    "TimeStampRequest",
    "TsaError",
    "gen_time_unit_ns",
    "parse_request",
    "reject",
]
