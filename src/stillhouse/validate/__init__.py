"""Data validation: structural checks now; Great Expectations suites for seed, soft labels and synthetic data."""
