"""KFP pipelines assembled from ``components/``."""
