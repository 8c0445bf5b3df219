"""Data: the T5 vocabulary, and (later) seqio tasks, sources and preprocessors."""
