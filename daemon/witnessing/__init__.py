"""The vault's witnesses (c2sp.org/tlog-witness, client side): each new checkpoint is
submitted to every configured witness, the cosignatures they answer are kept, and the
vault publishes its checkpoints cosigned — so that neither site can rewrite the log alone.

- :mod:`daemon.witnessing.policy`: the witnesses configured (URL and cosignature/v1 key)
  and the quorum that says when a checkpoint counts; checking cosignature lines; pure.
- :mod:`daemon.witnessing.client`: one ``add-checkpoint`` exchange over aiohttp.
- :mod:`daemon.witnessing.cosignatures`: the ``cosignatures`` table, and the cosigned
  checkpoint read from it.
- :mod:`daemon.witnessing.submitter`: :class:`Witnessing`, one task per witness following
  the log; what ``/health`` shows.
- :mod:`daemon.witnessing.metrics`: the same for ``/metrics``.

The witness itself is :mod:`daemon.witness`. See docs/witness.md.
"""

from daemon.witnessing.policy import (
    Cosigned,
    Policy,
    Witness,
    WitnessingConfig,
    WitnessingError,
    default_quorum,
    from_table,
)
from daemon.witnessing.submitter import Witnessing

__all__ = [
    "Cosigned",
    "Policy",
    "Witness",
    "Witnessing",
    "WitnessingConfig",
    "WitnessingError",
    "default_quorum",
    "from_table",
]
