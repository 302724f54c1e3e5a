"""Distillation: losses (pure), student construction, and the Ray Train loop."""
