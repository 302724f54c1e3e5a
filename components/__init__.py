"""KFP components: one per file, each a thin wrapper over one function in ``stillhouse.steps``.

Top-level imports stay to the standard library and ``kfp``: the component body runs in the step's
container (or, locally, a ``kfp.local`` subprocess) and imports the library there.
"""
