"""Retention: periods and legal holds (:mod:`.rules`), their tables (:mod:`.tables`), and
the purge that destroys expired personal data (:mod:`.purge`)."""
