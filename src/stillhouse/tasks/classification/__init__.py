"""Task ``classification``: text → label. ``model`` is the classifier format teacher and student share, ``heads``
the logistic-regression head initialisation, ``task`` the pipeline's verbs for it."""
