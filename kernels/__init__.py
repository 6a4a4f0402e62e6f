"""Triton kernels, one op per file; reached only through emergence_fast._dispatch."""
