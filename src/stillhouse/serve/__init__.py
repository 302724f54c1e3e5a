"""Serving decisions: request schemas and limits, bearer tokens, PII redaction, the audit log, feedback, chains;
and the process around BentoML: ``supervisor`` and ``worker`` (what ``stillhouse serve`` runs), ``transport``
(connection limits, TLS policy), ``logs`` (log hygiene), ``files`` (private modes).

The BentoML services in ``serving/`` (installed as ``stillhouse.serving``) only adapt these to HTTP.
"""
