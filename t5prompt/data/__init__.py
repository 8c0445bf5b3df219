"""Data: the T5 vocabulary, the seqio tasks (SuperGLUE, MRQA, GLUE), their sources and pipelines."""
