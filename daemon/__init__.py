"""The vault: an append-only, tamper-evident store of attendance sign-off records.

Pure rules (``ijson``, ``ine``, ``records``, ``rules``, ``leaf``, ``merkle``, ``note``,
``journal``) take bytes, values and an explicit ``now``; the store, the sealer and the HTTP
server are thin shells around them. The vault imports nothing of ours but
``timestamping`` (DESIGN.md, layout): it never sees the TSA's key.
"""
