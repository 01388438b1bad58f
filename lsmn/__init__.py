"""The `lsmn` command and the experiments behind it: the layer above the engine (lsmn_core) and
the analysis (analysis), which neither of them imports."""
