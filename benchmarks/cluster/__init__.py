"""The measurements of the cluster component (see
:mod:`benchmarks.components.cluster`), one module each."""
