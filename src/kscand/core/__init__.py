"""The engine: scanning, ranking, promotion and demotion over the Machine interface.

It imports only kscand.machine (the interface), kscand.errors, kscand.units, itself,
the standard library and numpy (tests/test_layout.py checks it), so that the live
machine, the simulator, the daemon and the evaluation all drive the same code.
"""
