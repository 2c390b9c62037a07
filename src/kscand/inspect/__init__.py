"""Read-only inspection of live processes and their traces, for the CLI to render.

Neither a backend nor the CLI: `oneshot` drives the engine's Scanner over the live
machine through an observing wrapper that never moves a page (`kscand scan`);
`record` test-and-clears Accessed bits with the engine's filters into a trace file
(`kscand record`); `heatmap` bins a trace over address and time (`kscand report
heatmap`). Imported only by those commands (lazily) and their tests.
"""
