"""Serving decisions: request schemas and limits, bearer tokens, PII redaction, the audit log, feedback, chains.

The BentoML services in ``serving/`` (installed as ``stillhouse.serving``) only adapt these to HTTP.
"""
