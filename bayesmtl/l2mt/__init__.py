"""L2MT: learning to multitask (Zhang, Wei & Yang 2018): experiences, LGNN task embeddings,
the estimation/link model, test-time Ω by Theorem 3."""
