"""Data sets: reading, sampling into seed/pool/eval, fingerprints and atomic artifact writes."""
