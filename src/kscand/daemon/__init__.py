"""The kscand daemon: a khugepaged-shaped loop around the engine, with signals and a control socket.

Modules
-------
- loop: the Daemon (its life cycle, the loop thread, requests from other threads).
- stopguard: the Machine decorator that ends a step at a stop request.
- protocol: the control commands, a dispatch table; control: the Unix socket
  server and client it is served by.
- snapshot: the status snapshot, pure; statedir: the state directory and file.
- reload: a config reload, as a pure plan; retune: tunable changes and checks.
- signals: the signal handlers and run_foreground (the main thread).
- rules: the [[process]] rules; metrics, prometheus: the metrics endpoint;
  trace: the JSON-lines trace sink.
The Backend (the machine the daemon drives) is in kscand.backends.

Threads
-------
- main: run_foreground() (kscand.daemon.signals) installs SIGTERM/SIGINT/SIGHUP handlers that only
  set a flag and wake the loop, then waits for the loop thread.
- loop ("kscand"): engine.step(), then an interruptible sleep of
  scan_sleep_ms. Between steps (and when woken during the sleep) it applies
  a config reload or new tunables, publishes a status snapshot and rewrites
  state_dir/status.json. It is the only thread that touches the engine.
- control ("kscand-ctl"): serves the Unix socket (kscand.daemon.control). It reads
  only the published snapshot and the desired tunables; changes go to the
  loop through `_desired_tunables` and take effect on the next step.
- metrics ("kscand-metrics", only with daemon.metrics / --metrics): serves the
  Prometheus endpoint (kscand.daemon.prometheus) from the published snapshot and the
  step and move-batch duration histograms, which the loop fills.
The loop, control and metrics threads block the daemon's signals, so the
kernel delivers them to the main thread and never interrupts an engine syscall.

How long one step can take, and how a stop interrupts it
--------------------------------------------------------
A step scans at most mms_to_scan processes, each for scan_size_bytes of VMA
(rounded up to a 2 MiB boundary: a THP is never split), read in ranges of at
most one 128 MiB history chunk,
then moves at most migrate_queue_max queued folios in move_pages(2) batches
of migrate_batch_folios. The engine gets the machine through StopGuard (kscand.daemon.stopguard):
once a stop is requested, the next range read or move batch raises
StepAbandoned instead of starting, so the step ends at the next such
boundary. A move_pages(2) call already running completes (the kernel moves
each page or leaves it; no batch is half issued), and the folios still
queued are dropped: they are only hints and are found again after a restart.
The stop therefore waits for at most one range read (milliseconds) or one
move batch (512 folios; worst case 512 THPs = 1 GiB of copying); steps
longer than LONG_STEP_NS are logged and counted as long_steps.
"""
