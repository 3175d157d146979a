"""A C2SP tlog-witness (c2sp.org/tlog-witness): each datacenter runs one, and it cosigns a
log's checkpoint only once it has checked that the log grew append-only since the last
checkpoint it cosigned — so that no one site can rewrite the vault's history alone.

- :mod:`daemon.witness.cosignature`: cosignature/v1 (c2sp.org/tlog-cosignature, Ed25519,
  signed-note type 0x04) — keys, signing, verifying; pure.
- :mod:`daemon.witness.protocol`: the add-checkpoint request's form and checks, and the
  refusals; pure.
- :mod:`daemon.witness.state`: what it remembers (the logs it witnesses, the latest head
  it cosigned for each), SQLite, one compare-and-swap.
- :mod:`daemon.witness.witness`: the witness — its key, its locks, a request end to end.
- :mod:`daemon.witness.app`: its aiohttp application.

See docs/witness.md.
"""
