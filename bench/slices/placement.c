// How long a woken thread waits for a core, beside a CPU-bound "hashing" thread
// of a given policy: the scheduler's part of the login storm, without atelier.
//
//   gcc -O2 -pthread bench/slices/placement.c -o /tmp/placement && /tmp/placement <scene> <policy>
//
// scene  pinned: the woken thread is pinned to the hashing thread's core (core 1)
//                and woken from core 0: is the hashing thread preempted at once?
//        placed: core 0 runs a busy nice-0 thread (the load generator) that wakes
//                an unpinned thread about once a millisecond: where does the
//                kernel place it, and how long does it wait?
//        idle:   as placed, the woken thread pinned to core 1 with nothing on it:
//                what waking an idle core costs.
//        behind: as placed, the woken thread pinned to core 0, behind the busy thread.
// policy none (no hashing thread), batch19 (SCHED_BATCH, nice 19: atelier's), idle
//        (SCHED_IDLE).
// Prints the wake-up latency's percentiles in ms over 3,000 wake-ups (a few seconds).
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define WAKEUPS 3000

static int pipe_fds[2];
static volatile int stop;
static const char *scene, *policy;
static long latency[WAKEUPS];

static long now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000L + t.tv_nsec;
}

static void pin(int core) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void busy(long ns) {
  long end = now_ns() + ns;
  while (now_ns() < end) {
  }
}

static void *hashing(void *unused) {
  (void)unused;
  pin(1);
  struct sched_param param = {0};
  if (!strcmp(policy, "batch19")) {
    sched_setscheduler(0, SCHED_BATCH, &param);
    setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 19);
  } else if (!strcmp(policy, "idle")) {
    sched_setscheduler(0, SCHED_IDLE, &param);
  }
  volatile double x = 1;
  while (!stop) x *= 1.0000001;
  return NULL;
}

static void *woken(void *unused) {
  (void)unused;
  if (!strcmp(scene, "pinned") || !strcmp(scene, "idle")) pin(1);
  if (!strcmp(scene, "behind")) pin(0);
  for (int i = 0; i < WAKEUPS; i++) {
    int64_t sent;
    if (read(pipe_fds[0], &sent, sizeof sent) != sizeof sent) exit(1);
    latency[i] = now_ns() - sent;
    busy(50000);  // a request's worth of work
  }
  return NULL;
}

static int by_value(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s pinned|placed|idle|behind none|batch19|idle\n", argv[0]);
    return 2;
  }
  scene = argv[1];
  policy = argv[2];
  if (pipe(pipe_fds)) return 1;
  int with_hashing = strcmp(policy, "none") != 0;
  pthread_t hasher, worker;
  if (with_hashing) pthread_create(&hasher, NULL, hashing, NULL);
  pthread_create(&worker, NULL, woken, NULL);
  pin(0);
  usleep(100000);
  for (int i = 0; i < WAKEUPS; i++) {
    if (!strcmp(scene, "pinned")) {
      usleep(2000 + rand() % 1000);  // core 0 idle between wake-ups
    } else {
      busy(700000 + rand() % 300000);  // core 0 always busy
    }
    int64_t sent = now_ns();
    if (write(pipe_fds[1], &sent, sizeof sent) != sizeof sent) return 1;
  }
  pthread_join(worker, NULL);
  stop = 1;
  if (with_hashing) pthread_join(hasher, NULL);
  qsort(latency, WAKEUPS, sizeof latency[0], by_value);
  printf("%s %s: wake-up p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f ms\n", scene, policy,
         latency[WAKEUPS / 2] / 1e6, latency[WAKEUPS * 9 / 10] / 1e6, latency[WAKEUPS * 99 / 100] / 1e6,
         latency[WAKEUPS * 999 / 1000] / 1e6, latency[WAKEUPS - 1] / 1e6);
  return 0;
}
