#!/usr/bin/env bash
# Record the page-access traces of real programs under valgrind's lackey
# (docs/recorded-workloads.md): redis-server under a Zipf client, the sqlite3 CLI
# on an indexed lookup/update mix, igraph's PageRank and BFS (a small C driver over
# libigraph) on a power-law graph.
#
#     bash evaluation/record/record.sh [redis|sqlite|graph|all|bench]   (root: apt-get)
#
# Each program runs under `valgrind --tool=lackey --trace-mem=yes`, its log
# streamed through a FIFO into lackey_agg (built here with gcc), which bins the
# data accesses by (window, page); trace_from_bins.py keeps the heap/anonymous
# pages and writes evaluation/traces/<name>.csv and <name>.summary.json.
# Sizes: the environment variables below (defaults: the committed traces).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
WORK="${RECORD_WORK:-$ROOT/build/record}"
TRACES="${RECORD_TRACES:-$ROOT/evaluation/traces}"
PY="${PY:-$ROOT/.venv/bin/python}"      # numpy, for trace_from_bins.py
SYSPY=/usr/bin/python3                  # Debian's, for the clients (stdlib only)
ACCESSES_PER_S="${ACCESSES_PER_S:-1e8}" # virtual time: data accesses per second
WINDOW_ACCESSES="${WINDOW_ACCESSES:-5000000}"   # one bin window: 0.05 s at 1e8/s
MAPS_EVERY="${MAPS_EVERY:-1000000}"     # /proc/PID/maps snapshot period, data accesses

# redis: key space, requests, skew; sqlite: rows, statements; graph: vertices
REDIS_KEYS="${REDIS_KEYS:-40000}"
REDIS_OPS="${REDIS_OPS:-20000}"
REDIS_SKEW="${REDIS_SKEW:-0.99}"
SQLITE_ROWS="${SQLITE_ROWS:-200000}"
SQLITE_STMTS="${SQLITE_STMTS:-6000}"
SQLITE_SKEW="${SQLITE_SKEW:-0.99}"
GRAPH_VERTICES="${GRAPH_VERTICES:-20000}"
GRAPH_EDGES_PER_VERTEX="${GRAPH_EDGES_PER_VERTEX:-8}"

log() { printf 'record: %s\n' "$*" >&2; }

install_deps() {
	local need=()
	command -v valgrind >/dev/null || need+=(valgrind)
	command -v gcc >/dev/null || need+=(gcc)
	command -v redis-server >/dev/null || need+=(redis-server)
	command -v sqlite3 >/dev/null || need+=(sqlite3)
	pkg-config --exists igraph 2>/dev/null || need+=(libigraph-dev pkg-config)
	[ ${#need[@]} -eq 0 ] && return 0
	if [ "$(id -u)" != 0 ]; then
		log "missing ${need[*]} and not root: apt-get install -y ${need[*]}"
		exit 2
	fi
	log "apt-get install ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
}

build_agg() {
	mkdir -p "$WORK"
	gcc -O2 -Wall -Wextra -o "$WORK/lackey_agg" "$HERE/lackey_agg.c"
}

# lackey_run NAME PID DRIVER... -- PROGRAM...
# Starts PROGRAM under lackey, its log into lackey_agg through a FIFO, writes the
# aggregator's pid to $WORK/NAME.agg.pid (the driver signals it: SIGUSR1 starts
# and then stops the recording), runs DRIVER (may be empty) and waits for both.
# PROGRAM's stdin/stdout: $LR_STDIN / $LR_STDOUT (default /dev/null).
lackey_run() {
	local name="$1" tpid="$2"
	shift 2
	local driver=()
	while [ "$1" != "--" ]; do driver+=("$1"); shift; done
	shift
	local fifo="$WORK/$name.fifo" pidf="$WORK/$name.agg.pid"
	rm -f "$fifo" "$pidf" "$WORK/$name".{bins,stats,maps}
	mkfifo "$fifo"
	local t0=$SECONDS
	valgrind --tool=lackey --trace-mem=yes --log-file="$fifo" "$@" \
		<"${LR_STDIN:-/dev/null}" >"${LR_STDOUT:-/dev/null}" &
	local vg=$!
	"$WORK/lackey_agg" --in "$fifo" --out "$WORK/$name.bins" --stats "$WORK/$name.stats" \
		--maps-pid "$vg" --maps-out "$WORK/$name.maps" --maps-every "$MAPS_EVERY" \
		--window-accesses "$WINDOW_ACCESSES" --start-at-mark &
	local agg=$!
	echo "$agg" >"$pidf"
	local rc=0
	if [ ${#driver[@]} -gt 0 ]; then "${driver[@]}" || rc=$?; fi
	wait "$vg" || rc=$?
	wait "$agg" || rc=$?
	rm -f "$fifo"
	log "$name: lackey run took $((SECONDS - t0)) s wall (status $rc)"
	[ "$rc" = 0 ] || { log "$name: failed"; return 1; }
	"$PY" "$HERE/trace_from_bins.py" --bins "$WORK/$name.bins" --stats "$WORK/$name.stats" \
		--maps "$WORK/$name.maps" --pid "$tpid" --accesses-per-s "$ACCESSES_PER_S" \
		--out "$TRACES/$name.csv" --summary "$TRACES/$name.summary.json"
	log "$name: wrote $TRACES/$name.csv ($(wc -l <"$TRACES/$name.csv") lines)"
}

# scenario NAME PROCESS PID WHAT: evaluation/scenarios/NAME.toml from the summary
scenario() {
	"$PY" "$HERE/make_scenario.py" --summary "$TRACES/$1.summary.json" --name "$1" \
		--process "$2" --pid "$3" --what "$4" --out "$ROOT/evaluation/scenarios/$1.toml"
}

record_redis() {
	local port=6399 rdb=redis-zipf.rdb
	local server=(redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save ""
		--appendonly no --daemonize no --dir "$WORK" --dbfilename "$rdb"
		--rdbcompression no --rdbchecksum no)  # LZF and CRC64 would cost the load under lackey
	rm -f "$WORK/$rdb"
	# the key space, loaded into a native server and saved (not recorded)
	"${server[@]}" --logfile "$WORK/redis-load.log" &
	local native=$!
	$SYSPY "$HERE/redis_client.py" --phase load --port "$port" --keys "$REDIS_KEYS"
	wait "$native"
	log "redis: $(du -h "$WORK/$rdb" | cut -f1) RDB file of $REDIS_KEYS keys"
	lackey_run redis-zipf 6379 \
		$SYSPY "$HERE/redis_client.py" --phase run --port "$port" --keys "$REDIS_KEYS" \
		--ops "$REDIS_OPS" --skew "$REDIS_SKEW" --mark-pid-file "$WORK/redis-zipf.agg.pid" -- \
		"${server[@]}" --logfile "$WORK/redis.log"
	scenario redis-zipf redis-server 6379 "redis-server 7 under a Zipf($REDIS_SKEW) client:\
 $REDIS_KEYS keys, $REDIS_OPS requests, 90 % GET / 10 % SET."
}

record_sqlite() {
	local db="$WORK/kv.db" in="$WORK/sqlite.in" out="$WORK/sqlite.out"
	rm -f "$db" "$db-journal" "$in" "$out"
	$SYSPY "$HERE/sqlite_workload.py" build --rows "$SQLITE_ROWS" | sqlite3 "$db"
	log "sqlite: $(du -h "$db" | cut -f1) database of $SQLITE_ROWS rows"
	mkfifo "$in" "$out"
	LR_STDIN="$in" LR_STDOUT="$out" lackey_run sqlite-kv 3403 \
		$SYSPY "$HERE/sqlite_workload.py" drive --rows "$SQLITE_ROWS" --stmts "$SQLITE_STMTS" \
		--skew "$SQLITE_SKEW" --stdin-fifo "$in" --stdout-fifo "$out" \
		--mark-pid-file "$WORK/sqlite-kv.agg.pid" -- sqlite3 "$db"
	rm -f "$in" "$out"
	scenario sqlite-kv sqlite3 3403 "the sqlite3 CLI: $SQLITE_ROWS-row table with an index,\
 $SQLITE_STMTS Zipf($SQLITE_SKEW) lookups (80 %) and updates (20 %)."
}

record_graph() {
	gcc -O2 -Wall -Wextra -o "$WORK/graph_workload" "$HERE/graph_workload.c" \
		$(pkg-config --cflags --libs igraph)
	lackey_run igraph-pagerank 2718 -- "$WORK/graph_workload" "$GRAPH_VERTICES" \
		"$GRAPH_EDGES_PER_VERTEX" 1 "$WORK/igraph-pagerank.agg.pid"
	scenario igraph-pagerank graph_workload 2718 "igraph PageRank (PRPACK) and two BFS on a\
 $GRAPH_VERTICES-vertex Barabasi-Albert graph, $GRAPH_EDGES_PER_VERTEX edges per vertex."
}

# bench: lackey's log of one igraph run (to a file), then lackey_agg and `wc -l`
# over that same file: the aggregator's lines/s against lackey's own output rate.
bench_agg() {
	gcc -O2 -Wall -Wextra -o "$WORK/graph_workload" "$HERE/graph_workload.c" \
		$(pkg-config --cflags --libs igraph)
	local logf="$WORK/bench.lackey"
	local t0 t1 t2 t3
	t0=$(date +%s.%N)
	valgrind --tool=lackey --trace-mem=yes --log-file="$logf" "$WORK/graph_workload" 5000 8 1 >/dev/null
	t1=$(date +%s.%N)
	"$WORK/lackey_agg" --in "$logf" --out "$WORK/bench.bins" --stats "$WORK/bench.stats"
	t2=$(date +%s.%N)
	wc -l <"$logf" >/dev/null
	t3=$(date +%s.%N)
	local lines
	lines=$(awk '$1 == "lines" {print $2}' "$WORK/bench.stats")
	awk -v n="$lines" -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" 'BEGIN {
		printf "bench: %d lackey lines; lackey wrote them at %.2f M lines/s,", n, n / (b - a) / 1e6
		printf " lackey_agg read them at %.1f M lines/s, wc -l at %.1f M lines/s", n / (c - b) / 1e6, n / (d - c) / 1e6
		printf " (lackey_agg / lackey: %.0fx)\n", (b - a) / (c - b) }'
	rm -f "$logf"
}

main() {
	local what="${1:-all}"
	case "$what" in redis|sqlite|graph|all|bench) ;; *) log "usage: record.sh [redis|sqlite|graph|all|bench]"; exit 2 ;; esac
	install_deps
	build_agg
	mkdir -p "$TRACES"
	case "$what" in
	redis) record_redis ;;
	sqlite) record_sqlite ;;
	graph) record_graph ;;
	bench) bench_agg ;;
	all)  # one after the other, each a plain command so that set -e stops at a failure
		record_redis
		record_sqlite
		record_graph
		;;
	esac
}

main "$@"
