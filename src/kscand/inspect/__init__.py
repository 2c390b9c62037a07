"""Read-only inspection of a live process with the engine's own scanner (`kscand scan`).

Neither a backend nor the CLI: it drives the engine's Scanner over the live machine
through an observing wrapper that never moves a page, and returns a report the CLI
renders. Imported only by `kscand scan` (lazily) and its tests.
"""
