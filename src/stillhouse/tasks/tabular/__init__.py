"""Task ``tabular`` (in progress): rows of numeric and categorical columns → a label. ``preprocess`` is the
fitted imputation, scaling and one-hot encoding that travels with the saved student."""
