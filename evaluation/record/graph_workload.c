/*
 * graph_workload: PageRank and BFS with Debian's igraph (libigraph-dev) on a
 * power-law graph, the analytics program recorded by record.sh.
 *
 *     graph_workload VERTICES EDGES_PER_VERTEX SEED [MARK_PID_FILE]
 *
 * Builds a directed Barabasi-Albert graph (preferential attachment, igraph's "bag"
 * algorithm: a new vertex links to m targets drawn from a bag holding each vertex
 * once per incident edge, multi-edges allowed; in-degrees
 * follow a power law), then sends SIGUSR1 to the pid in MARK_PID_FILE (the
 * recording starts), runs PageRank (PRPACK), a BFS from the highest-ranked
 * vertex and one from the newest vertex (both over edges in either direction), sends
 * SIGUSR1 again (the recording stops) and prints a checksum line.
 *
 * Built by record.sh: gcc -O2 graph_workload.c $(pkg-config --cflags --libs igraph)
 */
#include <igraph.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>

static void mark(const char *pid_file)
{
	FILE *f;
	long pid;

	if (!pid_file)
		return;
	f = fopen(pid_file, "r");
	if (!f || fscanf(f, "%ld", &pid) != 1 || pid <= 0) {
		fprintf(stderr, "graph_workload: cannot read a pid from %s\n", pid_file);
		exit(2);
	}
	fclose(f);
	if (kill((pid_t)pid, SIGUSR1)) {
		perror("graph_workload: kill");
		exit(2);
	}
}

static long parse_long(const char *s, const char *what)
{
	char *end;
	long v = strtol(s, &end, 10);

	if (*end || end == s || v <= 0) {
		fprintf(stderr, "graph_workload: %s: not a positive number\n", what);
		exit(2);
	}
	return v;
}

int main(int argc, char **argv)
{
	igraph_t g;
	igraph_vector_t rank;
	igraph_vector_int_t order, layers, parents;
	igraph_real_t value;
	igraph_integer_t top;
	long n, m, seed;
	const char *pid_file;

	if (argc < 4 || argc > 5) {
		fprintf(stderr, "usage: graph_workload VERTICES EDGES_PER_VERTEX SEED [MARK_PID_FILE]\n");
		return 2;
	}
	n = parse_long(argv[1], "VERTICES");
	m = parse_long(argv[2], "EDGES_PER_VERTEX");
	seed = parse_long(argv[3], "SEED");
	pid_file = argc == 5 ? argv[4] : NULL;

	igraph_rng_seed(igraph_rng_default(), (igraph_uint_t)seed);
	if (igraph_barabasi_game(&g, n, 1.0, m, NULL, 0, 1.0, 1, IGRAPH_BARABASI_BAG, NULL))
		return 1;
	mark(pid_file);

	igraph_vector_init(&rank, 0);
	if (igraph_pagerank(&g, IGRAPH_PAGERANK_ALGO_PRPACK, &rank, &value, igraph_vss_all(), 1,
			    0.85, NULL, NULL))
		return 1;
	top = igraph_vector_which_max(&rank);

	igraph_vector_int_init(&order, 0);
	igraph_vector_int_init(&layers, 0);
	igraph_vector_int_init(&parents, 0);
	if (igraph_bfs_simple(&g, top, IGRAPH_ALL, &order, &layers, &parents))
		return 1;
	if (igraph_bfs_simple(&g, n - 1, IGRAPH_ALL, &order, &layers, &parents))
		return 1;
	mark(pid_file);

	printf("graph_workload: vertices=%ld edges=%ld top=%ld rank=%.6g bfs_layers=%ld\n", n,
	       (long)igraph_ecount(&g), (long)top, VECTOR(rank)[top],
	       (long)igraph_vector_int_size(&layers) - 1);
	igraph_vector_int_destroy(&parents);
	igraph_vector_int_destroy(&layers);
	igraph_vector_int_destroy(&order);
	igraph_vector_destroy(&rank);
	igraph_destroy(&g);
	return 0;
}
