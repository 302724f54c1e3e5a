"""Synthetic data: generators (LLM, OpenAI-compatible endpoint, augmentation), similarity, filters."""
