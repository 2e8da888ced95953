// SPDX-License-Identifier: GPL-2.0
/*
 * pagefault: the cost of an anonymous page fault, which allocates one order-0 page
 * (one kmem:mm_page_alloc event) per 4 KiB touched.
 *
 * Each thread repeats: mmap(MiB), madvise(MADV_NOHUGEPAGE), write one byte per
 * 4 KiB page, munmap. THP is also off for the process (PR_SET_THP_DISABLE).
 * Prints one JSON line: threads, faults (per thread and total), elapsed_ns (wall,
 * from the start barrier to the last thread's end), ns_per_fault (per thread:
 * elapsed * threads / faults, i.e. what one fault costs a thread) and
 * cpu_ns_per_fault (user + system CPU time of the process per fault: what the
 * faults cost the CPUs, not counting time spent waiting for one on a busy machine).
 * Each thread first makes one untimed pass over its size (warm_up() says why).
 *
 * With a fourth argument "populate", pages are allocated by mmap(MAP_POPULATE)
 * instead of one fault each: the highest page-allocation rate a process can ask
 * for, used to load the streaming mode.
 *
 * usage: pagefault MIB ITERATIONS THREADS [populate]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static size_t bytes;
static long iterations;
static pthread_barrier_t warm, start;
static int populate;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

/* One untimed pass of what a timed iteration touches. On a VM whose balloon reports
 * free pages to the host (virtio-balloon free page reporting), free 2 MiB blocks may
 * have been handed back and cost a host fault each when touched again: which runs
 * pay that depends on what the machine freed just before (a compiler's exit, say),
 * not on the tracer. The warm-up takes the pages back; the timed iterations then
 * reuse them at once, before the reporting worker (2 s delay) can return them. */
static void warm_up(void)
{
	volatile char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		perror("mmap");
		exit(1);
	}
	madvise((void *)p, bytes, MADV_NOHUGEPAGE);
	for (size_t off = 0; off < bytes; off += 4096)
		p[off] = 1;
	munmap((void *)p, bytes);
}

static void *worker(void *arg)
{
	long *faults = arg;

	warm_up();
	pthread_barrier_wait(&warm);
	pthread_barrier_wait(&start);
	for (long i = 0; i < iterations; i++) {
		volatile char *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS |
					(populate ? MAP_POPULATE : 0), -1, 0);

		if (p == MAP_FAILED) {
			perror("mmap");
			exit(1);
		}
		if (populate) {
			*faults += bytes / 4096;
			munmap((void *)p, bytes);
			continue;
		}
		madvise((void *)p, bytes, MADV_NOHUGEPAGE);
		for (size_t off = 0; off < bytes; off += 4096) {
			p[off] = 1;
			(*faults)++;
		}
		munmap((void *)p, bytes);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: %s MIB ITERATIONS THREADS [populate]\n", argv[0]);
		return 2;
	}
	bytes = (size_t)atol(argv[1]) << 20;
	iterations = atol(argv[2]);
	int threads = atoi(argv[3]);

	populate = argc == 5;
	if (!bytes || iterations <= 0 || threads <= 0 || threads > 1024) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);

	pthread_t tid[1024];
	long faults[1024] = {0};

	struct rusage ru0, ru;

	pthread_barrier_init(&warm, NULL, threads + 1);
	pthread_barrier_init(&start, NULL, threads + 1);
	for (int t = 0; t < threads; t++)
		pthread_create(&tid[t], NULL, worker, &faults[t]);
	pthread_barrier_wait(&warm);	/* every thread warmed up */
	getrusage(RUSAGE_SELF, &ru0);
	pthread_barrier_wait(&start);
	uint64_t t0 = now_ns();
	for (int t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	uint64_t elapsed = now_ns() - t0;
	long total = 0;

	for (int t = 0; t < threads; t++)
		total += faults[t];
	getrusage(RUSAGE_SELF, &ru);
	double cpu_ns = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec -
			 ru0.ru_utime.tv_sec - ru0.ru_stime.tv_sec) * 1e9 +
			(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec -
			 ru0.ru_utime.tv_usec - ru0.ru_stime.tv_usec) * 1e3;
	printf("{\"threads\": %d, \"faults\": %ld, \"elapsed_ns\": %llu, "
	       "\"ns_per_fault\": %.1f, \"cpu_ns_per_fault\": %.1f}\n",
	       threads, total, (unsigned long long)elapsed,
	       (double)elapsed * threads / (double)total, cpu_ns / (double)total);
	return 0;
}
