// How long a thread with a 100 us slice (like atelier's async workers) waits
// for a core after its timer fires, while two threads that work in 3 ms
// stretches (like a database write or a password hash) keep both cores of a
// 2-core machine busy, by the slice those two ask for (ADR-0029).
//
//   gcc -O2 -o /tmp/wake bench/slices/wake.c -lpthread
//   /tmp/wake <burner slice, us> <burner nice> [<1: burners SCHED_BATCH>]
//   /tmp/wake 100 0; /tmp/wake 4000 0
//
// Bounded: 2,000 wake-ups of about 2.5 ms each, then the burners stop.
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

struct attr {
    uint32_t size, policy;
    uint64_t flags;
    int32_t nice;
    uint32_t prio;
    uint64_t runtime, deadline, period;
};

static void set_slice(uint64_t ns) {
    struct attr a;
    memset(&a, 0, sizeof a);
    syscall(SYS_sched_getattr, 0, &a, sizeof a, 0);
    a.size = sizeof a;
    a.flags = 0;
    a.runtime = ns;
    if (syscall(SYS_sched_setattr, 0, &a, 0)) perror("sched_setattr");
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000ull + t.tv_nsec;
}

static uint64_t burner_slice;
static int burner_nice, burner_batch;
static volatile int stop;

static void *burner(void *unused) {
    (void)unused;
    if (burner_batch) {
        struct sched_param p = {0};
        sched_setscheduler(0, SCHED_BATCH, &p);
    }
    set_slice(burner_slice);
    if (burner_nice) setpriority(PRIO_PROCESS, syscall(SYS_gettid), burner_nice);
    while (!stop) {  // 3 ms of work, then a short wait, as a database write does
        uint64_t t = now_ns();
        while (now_ns() - t < 3000000) {
        }
        usleep(200);
    }
    return NULL;
}

static int by_value(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s <burner slice us> <burner nice> [batch]\n", argv[0]);
        return 2;
    }
    burner_slice = strtoull(argv[1], NULL, 10) * 1000;
    burner_nice = atoi(argv[2]);
    burner_batch = argc > 3 ? atoi(argv[3]) : 0;
    enum { N = 2000 };
    pthread_t burners[2];
    for (int i = 0; i < 2; i++) pthread_create(&burners[i], NULL, burner, NULL);
    set_slice(100000);
    static uint64_t late[N];
    for (int i = 0; i < N; i++) {
        struct timespec d = {0, 2000000 + (rand() % 1000) * 1000};
        uint64_t t = now_ns();
        nanosleep(&d, NULL);
        late[i] = now_ns() - t - d.tv_nsec;
        for (volatile int k = 0; k < 20000; k++) {  // a short burst of work
        }
    }
    stop = 1;
    for (int i = 0; i < 2; i++) pthread_join(burners[i], NULL);
    qsort(late, N, sizeof late[0], by_value);
    printf("burners' slice %s us, nice %s: wake-up late by p50 %.3f, p99 %.3f, p99.9 %.3f, max %.3f ms\n",
           argv[1], argv[2], late[N / 2] / 1e6, late[N * 99 / 100] / 1e6, late[N * 999 / 1000] / 1e6,
           late[N - 1] / 1e6);
    return 0;
}
