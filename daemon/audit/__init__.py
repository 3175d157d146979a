"""Audit trails: what a funder's auditor receives on request, and checks without us.

``scope`` chooses the entries a request covers, ``bundle`` writes the zip DESIGN.md lays
out, ``checker`` is the one-file checker shipped in it (standard library and ``openssl``
only), ``verify`` is ``horodate audit verify`` (this package's own code, a second opinion),
``controls`` runs the checks a controller would, ``report_pdf`` sets the report in French.
"""
