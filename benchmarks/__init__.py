"""laneway's benchmark: ``python -m benchmarks`` (``make bench``), or ``--quick``.

Kept free of imports, because the load generator runs as ``python -m
benchmarks.loadgen`` in its own process and should start fast.
"""
