/*
 * lackey_agg: stream valgrind lackey's --trace-mem=yes log into per-window page bins.
 *
 * Input (stdin or --in FILE): lackey lines
 *     "I  0401ab70,3"        an instruction fetch (counted, not binned)
 *     " L 1fff000778,8"      a data load   } each one data access:
 *     " S 1fff000778,8"      a data store  } the virtual clock ticks once
 *     " M 1fff000778,8"      a modify      } per line (M too)
 *     "==123== ..."          valgrind's own messages (skipped)
 * Virtual time is the count of data accesses (L, S, M lines) since the start mark.
 * Window w holds data accesses [w * window, (w + 1) * window). An access whose last
 * byte lies on the next page also counts on that page ("page_straddles").
 *
 * Output (--out FILE): binary records, little-endian, one per (window, page) with
 * accesses, sorted by window then page:
 *     uint64 window, uint64 page (address >> 12), uint64 count
 * Stats (--stats FILE): "key value" lines (counters below).
 * Maps (--maps-pid PID --maps-out FILE): every --maps-every data accesses (and at
 * the start mark) /proc/PID/maps is appended to FILE after a line
 * "# snapshot accesses=N"; the classifier (trace_from_bins.py) uses them.
 *
 * SIGUSR1: with --start-at-mark the first SIGUSR1 starts the recording (everything
 * before is counted as before_mark and dropped, the clock restarts at 0); the next
 * SIGUSR1 stops it (everything after is counted as after_stop). Without
 * --start-at-mark the recording starts at the first line and the first SIGUSR1
 * stops it.
 *
 * Built by evaluation/record/record.sh: gcc -O2 -o lackey_agg lackey_agg.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAGE_SHIFT 12
#define READ_BUF_BYTES (4u << 20)
#define MAX_LINE_BYTES 4096

static volatile sig_atomic_t marks_seen;

static void on_usr1(int sig)
{
	(void)sig;
	marks_seen++;
}

struct bin {
	uint64_t page; /* page + 1; 0 = empty slot */
	uint64_t count;
};

struct table {
	struct bin *slots;
	size_t cap; /* power of two */
	size_t used;
};

static void die(const char *msg)
{
	fprintf(stderr, "lackey_agg: %s\n", msg);
	exit(2);
}

static void table_init(struct table *t, size_t cap)
{
	t->slots = calloc(cap, sizeof(*t->slots));
	if (!t->slots)
		die("out of memory");
	t->cap = cap;
	t->used = 0;
}

static inline size_t hash_page(uint64_t page, size_t cap)
{
	return (size_t)((page * 0x9E3779B97F4A7C15ull) >> 17) & (cap - 1);
}

static void table_grow(struct table *t);

static inline void table_add(struct table *t, uint64_t page, uint64_t n)
{
	uint64_t key = page + 1;
	size_t i = hash_page(page, t->cap);

	for (;;) {
		struct bin *b = &t->slots[i];
		if (b->page == key) {
			b->count += n;
			return;
		}
		if (b->page == 0) {
			b->page = key;
			b->count = n;
			if (++t->used * 2 > t->cap)
				table_grow(t);
			return;
		}
		i = (i + 1) & (t->cap - 1);
	}
}

static void table_grow(struct table *t)
{
	struct table bigger;
	size_t i;

	table_init(&bigger, t->cap * 2);
	for (i = 0; i < t->cap; i++)
		if (t->slots[i].page)
			table_add(&bigger, t->slots[i].page - 1, t->slots[i].count);
	free(t->slots);
	*t = bigger;
}

static int cmp_bin(const void *a, const void *b)
{
	const struct bin *x = a, *y = b;
	return (x->page > y->page) - (x->page < y->page);
}

struct stats {
	uint64_t lines, instr, loads, stores, modifies, valgrind_lines, malformed;
	uint64_t before_mark, after_stop, recorded, page_straddles, windows, records;
	uint64_t maps_snapshots, maps_failures, first_data_addr, first_data_seen;
	uint64_t mark_at_line;
};

struct agg {
	struct table t;
	uint64_t window_accesses, maps_every, maps_pid;
	uint64_t clock;  /* data accesses since the start (mark) */
	uint64_t window; /* current window */
	int recording, stopped, start_at_mark, marks_used;
	FILE *out, *maps_out;
	struct stats s;
};

static void put_u64(FILE *f, uint64_t v)
{
	unsigned char b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (unsigned char)(v >> (8 * i));
	if (fwrite(b, 1, 8, f) != 8)
		die("write failed");
}

static void flush_window(struct agg *a)
{
	size_t i, n = 0;
	struct bin *s = a->t.slots;

	if (!a->t.used)
		return;
	for (i = 0; i < a->t.cap; i++)
		if (s[i].page)
			s[n++] = s[i];
	qsort(s, n, sizeof(*s), cmp_bin);
	for (i = 0; i < n; i++) {
		put_u64(a->out, a->window);
		put_u64(a->out, s[i].page - 1);
		put_u64(a->out, s[i].count);
	}
	a->s.records += n;
	a->s.windows++;
	memset(s, 0, a->t.cap * sizeof(*s));
	a->t.used = 0;
}

static void snapshot_maps(struct agg *a)
{
	char path[64], buf[8192];
	FILE *f;
	size_t n;

	if (!a->maps_out)
		return;
	snprintf(path, sizeof(path), "/proc/%llu/maps", (unsigned long long)a->maps_pid);
	f = fopen(path, "r");
	if (!f) {
		a->s.maps_failures++;
		return;
	}
	fprintf(a->maps_out, "# snapshot accesses=%llu\n", (unsigned long long)a->clock);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		fwrite(buf, 1, n, a->maps_out);
	fclose(f);
	a->s.maps_snapshots++;
}

static void handle_marks(struct agg *a)
{
	while (a->marks_used < marks_seen) {
		a->marks_used++;
		if (!a->recording && !a->stopped) {
			/* the start mark: drop what came before, restart the clock */
			memset(a->t.slots, 0, a->t.cap * sizeof(*a->t.slots));
			a->t.used = 0;
			a->s.before_mark += a->clock;
			a->clock = 0;
			a->window = 0;
			a->recording = 1;
			a->s.mark_at_line = a->s.lines;
			snapshot_maps(a);
		} else if (a->recording) {
			flush_window(a);
			a->recording = 0;
			a->stopped = 1;
		}
	}
}

static inline int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One lackey line without its newline. */
static void handle_line(struct agg *a, const char *p, size_t len)
{
	uint64_t addr = 0, size = 0;
	size_t i;
	int kind, v;

	a->s.lines++;
	if (marks_seen != a->marks_used)
		handle_marks(a);
	if (len >= 2 && p[0] == '=' && p[1] == '=') {
		a->s.valgrind_lines++;
		return;
	}
	if (len < 4) {
		a->s.malformed++;
		return;
	}
	if (p[0] == 'I' && p[1] == ' ') {
		a->s.instr++;
		return;
	}
	if (p[0] != ' ' || (p[1] != 'L' && p[1] != 'S' && p[1] != 'M') || p[2] != ' ') {
		a->s.malformed++;
		return;
	}
	kind = p[1];
	for (i = 3; i < len && (v = hexval((unsigned char)p[i])) >= 0; i++)
		addr = (addr << 4) | (uint64_t)v;
	if (i == 3 || i >= len || p[i] != ',') {
		a->s.malformed++;
		return;
	}
	for (i++; i < len && p[i] >= '0' && p[i] <= '9'; i++)
		size = size * 10 + (uint64_t)(p[i] - '0');
	if (i != len || size == 0) {
		a->s.malformed++;
		return;
	}
	if (kind == 'L')
		a->s.loads++;
	else if (kind == 'S')
		a->s.stores++;
	else
		a->s.modifies++;
	if (!a->s.first_data_seen) {
		a->s.first_data_seen = 1;
		a->s.first_data_addr = addr;
	}
	if (a->stopped) {
		a->s.after_stop++;
		return;
	}
	if (a->maps_every && a->clock % a->maps_every == 0)
		snapshot_maps(a);
	if (!a->recording) {
		a->clock++;
		return;
	}
	if (a->clock / a->window_accesses != a->window) {
		flush_window(a);
		a->window = a->clock / a->window_accesses;
	}
	a->clock++;
	a->s.recorded++;
	table_add(&a->t, addr >> PAGE_SHIFT, 1);
	if (((addr + size - 1) >> PAGE_SHIFT) != (addr >> PAGE_SHIFT)) {
		a->s.page_straddles++;
		table_add(&a->t, (addr + size - 1) >> PAGE_SHIFT, 1);
	}
}

/*
 * Read the log in big chunks. Valgrind writes lackey's log in small pieces; a
 * reader woken for every piece costs both processes a context switch each time,
 * so the pipe is enlarged and a short read is followed by a short nap
 * (NAP_NS) to let the writer fill it.
 */
#define NAP_NS 2000000L
#define SHORT_READ_BYTES (256u << 10)

static void run(struct agg *a, int fd)
{
	char *buf = malloc(READ_BUF_BYTES + MAX_LINE_BYTES);
	size_t have = 0;
	struct timespec nap = { 0, NAP_NS };

	if (!buf)
		die("out of memory");
#ifdef F_SETPIPE_SZ
	(void)fcntl(fd, F_SETPIPE_SZ, 1 << 20); /* fails on a regular file: fine */
#endif
	for (;;) {
		ssize_t n = read(fd, buf + have, READ_BUF_BYTES);
		size_t start = 0, i;

		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("read failed");
		}
		if (n == 0)
			break;
		have += (size_t)n;
		for (i = 0; i < have; i++) {
			if (buf[i] != '\n')
				continue;
			handle_line(a, buf + start, i - start);
			start = i + 1;
		}
		memmove(buf, buf + start, have - start);
		have -= start;
		if (have > MAX_LINE_BYTES) { /* an absurd line: drop it */
			a->s.malformed++;
			have = 0;
		}
		if ((size_t)n < SHORT_READ_BYTES)
			nanosleep(&nap, NULL);
	}
	if (have)
		handle_line(a, buf, have);
	handle_marks(a);
	if (a->recording)
		flush_window(a);
	free(buf);
}

static uint64_t parse_u64(const char *s, const char *what)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end || end == s)
		die(what);
	return (uint64_t)v;
}

#define STAT(f, name) fprintf(f, "%s %llu\n", #name, (unsigned long long)a.s.name)

int main(int argc, char **argv)
{
	struct agg a;
	const char *in_path = NULL, *out_path = NULL, *stats_path = NULL, *maps_path = NULL;
	int in = 0;
	FILE *sf;
	struct sigaction sa;
	int i;

	memset(&a, 0, sizeof(a));
	a.window_accesses = 10000000;
	for (i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *val = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(arg, "--start-at-mark")) {
			a.start_at_mark = 1;
			continue;
		}
		if (!val)
			die("usage: lackey_agg --out FILE [--stats FILE] [--in FILE] "
			    "[--window-accesses N] [--start-at-mark] "
			    "[--maps-pid PID --maps-out FILE [--maps-every N]]");
		i++;
		if (!strcmp(arg, "--out"))
			out_path = val;
		else if (!strcmp(arg, "--in"))
			in_path = val;
		else if (!strcmp(arg, "--stats"))
			stats_path = val;
		else if (!strcmp(arg, "--maps-out"))
			maps_path = val;
		else if (!strcmp(arg, "--maps-pid"))
			a.maps_pid = parse_u64(val, "--maps-pid: not a number");
		else if (!strcmp(arg, "--maps-every"))
			a.maps_every = parse_u64(val, "--maps-every: not a number");
		else if (!strcmp(arg, "--window-accesses"))
			a.window_accesses = parse_u64(val, "--window-accesses: not a number");
		else
			die("unknown option");
	}
	if (!out_path)
		die("--out FILE is required");
	if (!a.window_accesses)
		die("--window-accesses must be > 0");
	if (maps_path && !a.maps_pid)
		die("--maps-out needs --maps-pid");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);

	if (in_path && (in = open(in_path, O_RDONLY)) < 0)
		die("cannot open --in");
	if (!(a.out = fopen(out_path, "wb")))
		die("cannot open --out");
	if (maps_path && !(a.maps_out = fopen(maps_path, "w")))
		die("cannot open --maps-out");
	table_init(&a.t, 1u << 16);
	a.recording = !a.start_at_mark;
	if (a.recording)
		snapshot_maps(&a);
	run(&a, in);
	if (fclose(a.out))
		die("write failed");
	if (a.maps_out && fclose(a.maps_out))
		die("write failed");
	sf = stats_path ? fopen(stats_path, "w") : stderr;
	if (!sf)
		die("cannot open --stats");
	fprintf(sf, "window_accesses %llu\n", (unsigned long long)a.window_accesses);
	STAT(sf, lines);
	STAT(sf, instr);
	STAT(sf, loads);
	STAT(sf, stores);
	STAT(sf, modifies);
	STAT(sf, valgrind_lines);
	STAT(sf, malformed);
	STAT(sf, before_mark);
	STAT(sf, after_stop);
	STAT(sf, recorded);
	STAT(sf, page_straddles);
	STAT(sf, windows);
	STAT(sf, records);
	STAT(sf, maps_snapshots);
	STAT(sf, maps_failures);
	STAT(sf, first_data_addr);
	STAT(sf, mark_at_line);
	fprintf(sf, "started %d\n", a.start_at_mark ? a.marks_used > 0 : 1);
	if (sf != stderr && fclose(sf))
		die("write failed");
	return 0;
}
