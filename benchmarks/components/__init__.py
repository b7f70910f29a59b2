"""Component benchmarks, each measured against a target: appends, search, queued
runs, the HTTP hot path and isolation."""
