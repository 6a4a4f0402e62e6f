"""The native ops, one module each: its torch reference (the oracle), its argument checks and the
wrapper that runs it on the backend :mod:`emergence_fast._dispatch` picks.

Each sits beside its kernels, under the same name: ``kernels/<op>.py`` (Triton),
``csrc/cpu/<op>.cpp`` and ``csrc/cuda/<op>.cu``. Import the wrappers from their modules
(``from emergence_fast.ops.gram import gram``); this package re-exports nothing, so
``emergence_fast.ops.gram`` is always the module.
"""
