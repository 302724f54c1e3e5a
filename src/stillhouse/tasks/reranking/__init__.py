"""Task ``reranking``: a query and its candidate passages → relevance scores. ``model`` holds the re-ranker
formats (cross-encoder, bi-encoder, monoT5), ``train`` their training items, ``task`` the pipeline's verbs."""
