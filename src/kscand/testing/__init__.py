"""Support for tests: fault injection around the live machine's mover (`faults.py`).

Nothing in the daemon, the CLI or a backend imports this package (tests/test_layout.py),
so a production daemon cannot run with it.
"""
