/*
 * pagemap_read: the C baseline of bench/bench_pagemap.py.
 *
 * Reads /proc/PID/pagemap for NPAGES pages from START in chunks, then
 * /proc/kpageflags and /proc/kpagecount for the present PFNs, decodes the
 * flags kscand filters on and counts present and eligible pages.
 *
 *   pagemap_read PID START_HEX NPAGES MODE
 *
 * MODE "runs":   one pread per run of consecutive PFNs in address order
 *                (the minimal way; what tools/mm/page-types does).
 * MODE "kscand": what kscand's Python reader does: runs in address order
 *                that also step over gaps of up to MAX_GAP PFNs, and kpagecount
 *                read only for non-exclusive file pages (an exclusive page
 *                has a single mapper; a non-exclusive anon page is shared).
 * MODE "scan":   "kscand", with pagemap read only for the runs of present or
 *                swapped pages that PAGEMAP_SCAN (Linux 6.7+) returns, as
 *                kscand does where the kernel has it (one ioctl of up to
 *                REGIONS page_regions at a time, one pread per region).
 *
 * Prints: pages=N present=N eligible=N ns=N cpu_ns=N preads=N ioctls=N
 * (ns: wall clock; cpu_ns: this process's CPU time, user + system)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHUNK 32768 /* pages per pagemap read: kscand's 128 MiB history chunk */
#define MAX_GAP 8

#define PM_PRESENT (1ULL << 63)
#define PM_EXCLUSIVE (1ULL << 56)
#define PM_FILE (1ULL << 61)
#define PM_PFN_MASK ((1ULL << 55) - 1)

#define KPF_LRU 5
#define KPF_ANON 12
#define KPF_COMPOUND_TAIL 16
#define KPF_HUGE 17
#define KPF_UNEVICTABLE 18
#define KPF_NOPAGE 20
#define KPF_KSM 21
#define KPF_THP 22
#define KPF_ZERO_PAGE 24
#define BIT(n) (1ULL << (n))

static uint64_t pm[CHUNK], kf[CHUNK], kc[CHUNK], tmp_f[CHUNK + MAX_GAP * CHUNK],
	tmp_c[CHUNK + MAX_GAP * CHUNK];
static unsigned long nr_preads;

struct pfn_idx {
	uint64_t pfn;
	uint32_t idx;
};
static struct pfn_idx order[CHUNK]; /* selected pages in address order */

static ssize_t pread_all(int fd, void *buf, size_t len, off_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t got = pread(fd, (char *)buf + done, len - done, off + done);

		nr_preads++;
		if (got < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (got == 0)
			break;
		done += got;
	}
	return done;
}

/* include/uapi/linux/fs.h (6.7+), spelled out: older headers lack it. */
struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct page_region {
	uint64_t start, end, categories;
};
#define PAGEMAP_SCAN_IOCTL _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_PRESENT (1ULL << 3)
#define PAGE_IS_SWAPPED (1ULL << 4)
#define REGIONS 512 /* kscand.live.pagemap_scan.REGIONS_PER_CALL */

static struct page_region regions[REGIONS];
static unsigned long nr_ioctls;

/* pagemap entries of pages [first, first + n): only the present or swapped runs read. */
static int read_pagemap_scan(int fm, uint64_t first, size_t n)
{
	uint64_t start = first << 12, end = (first + n) << 12;

	memset(pm, 0, n * 8);
	while (start < end) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg), .start = start, .end = end,
			.vec = (uintptr_t)regions, .vec_len = REGIONS,
			.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
			.return_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
		};
		int nr = ioctl(fm, PAGEMAP_SCAN_IOCTL, &arg);

		nr_ioctls++;
		if (nr < 0)
			return -1;
		for (int r = 0; r < nr; r++) {
			uint64_t lo = regions[r].start >> 12, hi = regions[r].end >> 12;

			if (pread_all(fm, pm + (lo - first), (hi - lo) * 8, lo * 8) < 0)
				return -1;
		}
		if (arg.walk_end <= start)
			break;
		start = arg.walk_end;
	}
	return 0;
}

/* Address-order runs of consecutive PFNs: one pread per run and file. */
static void read_runs(int ff, int fc, size_t n)
{
	size_t i = 0;

	while (i < n) {
		if (!(pm[i] & PM_PRESENT)) {
			kf[i] = kc[i] = 0;
			i++;
			continue;
		}
		uint64_t first = pm[i] & PM_PFN_MASK;
		size_t j = i + 1;

		while (j < n && (pm[j] & PM_PRESENT) && (pm[j] & PM_PFN_MASK) == first + (j - i))
			j++;
		memset(kf + i, 0, (j - i) * 8);
		memset(kc + i, 0, (j - i) * 8);
		pread_all(ff, kf + i, (j - i) * 8, first * 8);
		pread_all(fc, kc + i, (j - i) * 8, first * 8);
		i = j;
	}
}

/*
 * kscand's strategy for the selected present pages, in address order: a run
 * goes on while each PFN equals the previous one or is at most MAX_GAP + 1
 * ahead of it; one pread per run, values scattered back.
 */
static void read_selected(int fd, uint64_t *out, uint64_t *tmp, size_t n, uint64_t need_mask,
			  uint64_t need_value)
{
	size_t m = 0, i = 0;

	for (size_t k = 0; k < n; k++) {
		out[k] = 0;
		if ((pm[k] & PM_PRESENT) && (pm[k] & need_mask) == need_value) {
			order[m].pfn = pm[k] & PM_PFN_MASK;
			order[m].idx = k;
			m++;
		}
	}
	while (i < m) {
		uint64_t first = order[i].pfn, last = first;
		size_t j = i + 1;

		while (j < m && order[j].pfn >= last && order[j].pfn - last <= MAX_GAP + 1)
			last = order[j++].pfn;
		size_t len = last - first + 1;

		memset(tmp, 0, len * 8);
		pread_all(fd, tmp, len * 8, first * 8);
		for (size_t k = i; k < j; k++)
			out[order[k].idx] = tmp[order[k].pfn - first];
		i = j;
	}
}

int main(int argc, char **argv)
{
	char path[64];
	struct timespec t0, t1, c0, c1;
	unsigned long present = 0, eligible = 0;

	if (argc != 5) {
		fprintf(stderr, "usage: %s PID START_HEX NPAGES runs|kscand|scan\n", argv[0]);
		return 2;
	}
	int scan = strcmp(argv[4], "scan") == 0;
	int kscand = scan || strcmp(argv[4], "kscand") == 0;
	uint64_t start = strtoull(argv[2], NULL, 16);
	size_t npages = strtoull(argv[3], NULL, 10);

	snprintf(path, sizeof(path), "/proc/%s/pagemap", argv[1]);
	int fm = open(path, O_RDONLY);
	int ff = open("/proc/kpageflags", O_RDONLY);
	int fc = open("/proc/kpagecount", O_RDONLY);

	if (fm < 0 || ff < 0 || fc < 0) {
		perror("open");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
	for (size_t off = 0; off < npages; off += CHUNK) {
		size_t n = npages - off < CHUNK ? npages - off : CHUNK;
		if (scan) {
			if (read_pagemap_scan(fm, (start >> 12) + off, n) < 0) {
				perror("PAGEMAP_SCAN");
				return 1;
			}
		} else {
			ssize_t got = pread_all(fm, pm, n * 8, ((start >> 12) + off) * 8);

			if (got < 0) {
				perror("pread pagemap");
				return 1;
			}
			memset((char *)pm + got, 0, n * 8 - got);
		}
		if (kscand) {
			read_selected(ff, kf, tmp_f, n, 0, 0);
			read_selected(fc, kc, tmp_c, n, PM_EXCLUSIVE | PM_FILE, PM_FILE);
		} else
			read_runs(ff, fc, n);
		for (size_t i = 0; i < n; i++) {
			if (!(pm[i] & PM_PRESENT))
				continue;
			present++;
			uint64_t f = kf[i];
			int shared = ((f & BIT(KPF_ANON)) && !(pm[i] & PM_EXCLUSIVE)) || kc[i] > 1;
			int tail = (f & BIT(KPF_THP)) && (f & BIT(KPF_COMPOUND_TAIL));

			if (!shared && !tail && (f & BIT(KPF_LRU)) &&
			    !(f & (BIT(KPF_HUGE) | BIT(KPF_UNEVICTABLE) | BIT(KPF_NOPAGE) |
				   BIT(KPF_KSM) | BIT(KPF_ZERO_PAGE))))
				eligible++;
		}
	}
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("pages=%zu present=%lu eligible=%lu ns=%lld cpu_ns=%lld preads=%lu ioctls=%lu\n",
	       npages, present, eligible,
	       (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec),
	       (long long)(c1.tv_sec - c0.tv_sec) * 1000000000LL + (c1.tv_nsec - c0.tv_nsec),
	       nr_preads, nr_ioctls);
	return 0;
}
