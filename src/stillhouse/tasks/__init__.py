"""Tasks: the model heads, inputs and metrics of each task Stillhouse distils."""
