"""The vault's vitals, for the service manager (``horodate.sd_notify``).

- *Ready* as soon as it is asked: the caller asks once the store is open and checked
  (:meth:`Vault.start`: the tree reloaded from what the database holds, the first
  checkpoint made) and the HTTP site listens.
- *Healthy* while the committer's thread (the vault's one writer) runs and none of its
  background loops (the sealer, the checkpoints) has ended. The event loop's health is that
  the check is asked at all: it runs on the loop.
- The *status*: entries and pending seals, and a full disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.vault import Vault


@dataclass(frozen=True, slots=True)
class Vitals:
    ready: bool
    healthy: bool
    status: str


def vault_vitals(vault: Vault) -> Vitals:
    problems = []
    if not vault.committer.alive():
        problems.append("the committer thread is dead: nothing can be written")
    problems += [f"its {name} loop ended" for name in vault.dead_loops()]
    reader = vault.store.reader()
    entries = vault.sequencer.size
    pending = reader.pending_count() if reader.pending(1) else 0  # the count scans: only if any
    status = f"{entries} entries, {pending} pending seal{'s' if pending != 1 else ''}"
    if vault.disk_full:
        status += ", disk full: appends refused"
    if problems:
        status = f"NOT HEALTHY: {'; '.join(problems)} | {status}"
    return Vitals(ready=True, healthy=not problems, status=status)
