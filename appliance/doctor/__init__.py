"""``horodate doctor``'s checks: is this host fit to run the appliance, and if not, what to
type to make it so.

Each check reads the host under one root (:class:`~appliance.doctor.findings.Host`: ``/``
on the appliance, a fake sysfs/devfs/boot tree in the tests) and answers a
:class:`~appliance.doctor.findings.Finding` — ``ok``, ``warn``, ``FAIL`` or ``skip`` with
the exact fix. The network (NTP servers, the running appliance's ``/health``) is reached
through callables passed in. One module per group: ``boot`` (the Pi's firmware settings),
``devices`` (serial, I2C, DS3231, PPS), ``peers`` (NTP, the ensemble), ``credentials``
(key and certificates), ``storage`` (space and fsync); ``diagnosis`` runs them all.
"""

from .diagnosis import Diagnosis, Probes, diagnose
from .findings import Finding, Host, Verdict

__all__ = ["Diagnosis", "Finding", "Host", "Probes", "Verdict", "diagnose"]
