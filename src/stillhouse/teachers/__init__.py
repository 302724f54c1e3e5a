"""Teachers: encoders fine-tuned on the seed set (LLM and endpoint teachers come with a later issue)."""
