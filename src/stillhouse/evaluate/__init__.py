"""Evaluation: metrics (pure), speed, the three-way comparison, the HTML report and the model card."""
