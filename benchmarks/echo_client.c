/*
 * echo_client.c: the load generator of benchmarks/echo.py (epoll, no Python).
 *
 *   echo_client pingpong HOST PORT CONNS SECONDS WARMUP [THREADS [SIZE [WAIT]]]
 *   echo_client churn    HOST PORT SLOTS SECONDS WARMUP [THREADS [SIZE [WAIT]]]
 *
 * pingpong: CONNS connections, each sends SIZE bytes and waits for the whole
 *   echo before sending again. ops = round trips completed in the window.
 * churn: SLOTS concurrent slots, each: connect, send SIZE bytes, read SIZE
 *   bytes, close, repeat. ops = connections completed in the window.
 *
 * Sockets are non-blocking with TCP_NODELAY; each thread runs its own epoll
 * loop over its share of the connections or slots. WAIT is how a thread
 * waits for events: "block" (epoll_wait sleeps, the default) or "spin"
 * (epoll_wait never sleeps). On one machine a sleeping client is woken by
 * the server's sends, and that wake-up (an inter-processor interrupt, dear
 * in a virtual machine) is paid on the server's core, in the kernel, the
 * more often the more the client sleeps: a slower server makes the client
 * sleep more and so pays more per connection, which exaggerates any
 * difference between two servers. A spinning client is never asleep, so
 * the server pays the same kernel cost whatever its speed; its idle share
 * (the time spent in polls that found nothing) still shows which side waits
 * for which. The main thread only
 * keeps time: it prints "start" after WARMUP seconds and "end" SECONDS later
 * (so the caller can sample CPU use over the same window), then stops the
 * workers. Stopping is clean: no new message or connection is started, the
 * ones in flight finish (at most DRAIN_SECONDS), and every socket is closed
 * with nothing unread, so the server sees a plain EOF and never a reset.
 * Against a loopback address, churn spreads its connections over SOURCES
 * source addresses (127.0.0.1, .2, ...): a closing client leaves one
 * TIME_WAIT socket per connection, and at tens of thousands of connections
 * per second one source address's ephemeral ports run short, so connect()
 * spends its time searching for a free port and the client, not the server,
 * becomes the bottleneck. Last line:
 *
 *   result mode=M ops=N seconds=S total=T errors=E unfinished=U idle=I
 *
 * total counts every connection that completed cleanly over the whole run
 * (warm-up and drain included): the number a server that tracks connections
 * must have seen open and close, plus errors that happened after accept.
 * idle is the share of the measured window the threads spent in polls that
 * found nothing (spin only; -1 with block, where the CPU use tells).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 65536
#define MAX_EVENTS 256
#define DRAIN_SECONDS 2.0
#define SOURCES 64

enum { IDLE, CONNECTING, READING };

struct conn {
    int fd;
    int state;
    size_t got;
};

struct worker {
    pthread_t thread;
    int count; /* connections (pingpong) or slots (churn) */
    struct conn *conns;
    unsigned long ops;   /* read by the main thread: atomic accesses */
    unsigned long idle_ns; /* the same; time in empty polls (spin only) */
    unsigned long total; /* written before join: plain */
    unsigned long errors;
    unsigned long unfinished;
    unsigned long next_source;
    int failed;
};

static struct sockaddr_in addr;
static size_t size = 100;
static int stopping; /* set by the main thread: atomic accesses */
static int ready;    /* pingpong workers that have connected */
static int poll_ms = 50; /* epoll_wait timeout: 0 when spinning */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double when) {
    double left;
    while ((left = when - now()) > 0) {
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void set_nodelay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
}

/* Send one message; a short write on a socket whose last echo was read in
 * full cannot happen for small messages, so it is treated as an error. */
static int send_msg(int fd, const char *msg) {
    ssize_t n = send(fd, msg, size, MSG_NOSIGNAL);
    return n == (ssize_t)size ? 0 : -1;
}

/* Read what is there; returns 1 once the whole echo has arrived, 0 if more
 * is to come, -1 on EOF or error. */
static int read_echo(struct conn *c, char *buf) {
    for (;;) {
        ssize_t n = recv(c->fd, buf, size - c->got, 0);
        if (n > 0) {
            c->got += (size_t)n;
            if (c->got == size) return 1;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return 0;
        } else {
            return -1;
        }
    }
}

/* epoll_wait with the chosen timeout; when spinning, a run of empty polls is
 * timed (two clock reads per run, none per poll) and added to idle_ns. */
static int wait_events(struct worker *w, int ep, struct epoll_event *events, double *empty_since) {
    int n = epoll_wait(ep, events, MAX_EVENTS, poll_ms);
    if (n < 0 && errno != EINTR) die("epoll_wait");
    if (poll_ms == 0) {
        if (n <= 0 && *empty_since == 0) {
            *empty_since = now();
        } else if (n > 0 && *empty_since != 0) {
            unsigned long ns = (unsigned long)((now() - *empty_since) * 1e9);
            __atomic_store_n(&w->idle_ns, w->idle_ns + ns, __ATOMIC_RELAXED);
            *empty_since = 0;
        }
    }
    return n;
}

static void *pingpong(void *arg) {
    struct worker *w = arg;
    char msg[MAX_SIZE], buf[MAX_SIZE];
    struct epoll_event events[MAX_EVENTS];
    int ep = epoll_create1(0), open = 0;
    if (ep < 0) die("epoll_create1");
    memset(msg, 'x', size);
    for (int i = 0; i < w->count; i++) {
        struct conn *c = &w->conns[i];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        if (c->fd < 0) die("socket");
        if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
            perror("connect");
            w->failed = 1;
            __atomic_add_fetch(&ready, 1, __ATOMIC_RELEASE);
            return NULL;
        }
        set_nodelay(c->fd);
        if (fcntl(c->fd, F_SETFL, O_NONBLOCK) < 0) die("O_NONBLOCK");
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
        c->state = READING;
        c->got = 0;
        open++;
    }
    __atomic_add_fetch(&ready, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < w->count; i++) {
        if (send_msg(w->conns[i].fd, msg) < 0) die("send");
    }
    double deadline = 0, empty_since = 0;
    while (open > 0) {
        int stop = __atomic_load_n(&stopping, __ATOMIC_ACQUIRE);
        if (stop && deadline == 0) deadline = now() + DRAIN_SECONDS;
        if (stop && now() > deadline) break;
        int n = wait_events(w, ep, events, &empty_since);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int r = read_echo(c, buf);
            if (r == 0) continue;
            if (r == 1) {
                __atomic_store_n(&w->ops, w->ops + 1, __ATOMIC_RELAXED);
                c->got = 0;
                if (!stop && send_msg(c->fd, msg) == 0) continue;
                if (stop) w->total++;
            }
            if (r < 0 || !stop) w->errors++;
            close(c->fd); /* also leaves the epoll set */
            c->state = IDLE;
            open--;
        }
    }
    for (int i = 0; i < w->count; i++) {
        if (w->conns[i].state != IDLE) {
            close(w->conns[i].fd);
            w->unfinished++;
        }
    }
    close(ep);
    return NULL;
}

static int churn_start(struct worker *w, int ep, struct conn *c) {
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (c->fd < 0) die("socket");
    set_nodelay(c->fd);
    if ((ntohl(addr.sin_addr.s_addr) >> 24) == 127) {
        /* Choose the source address now, the port at connect() time, so the
         * port only has to be unique for this source and destination. */
        int one = 1;
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(w->next_source++ % SOURCES));
        if (setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one) < 0)
            die("IP_BIND_ADDRESS_NO_PORT");
        if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) die("bind");
    }
    c->got = 0;
    c->state = CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0 && errno != EINPROGRESS) {
        close(c->fd);
        c->state = IDLE;
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
    return 0;
}

static void *churn(void *arg) {
    struct worker *w = arg;
    char msg[MAX_SIZE], buf[MAX_SIZE];
    struct epoll_event events[MAX_EVENTS];
    int ep = epoll_create1(0), active = 0;
    if (ep < 0) die("epoll_create1");
    memset(msg, 'x', size);
    for (int i = 0; i < w->count; i++) {
        if (churn_start(w, ep, &w->conns[i]) == 0) active++;
        else w->errors++;
    }
    double deadline = 0, empty_since = 0;
    while (active > 0) {
        int stop = __atomic_load_n(&stopping, __ATOMIC_ACQUIRE);
        if (stop && deadline == 0) deadline = now() + DRAIN_SECONDS;
        if (stop && now() > deadline) break;
        int n = wait_events(w, ep, events, &empty_since);
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int failed = 0;
            if (c->state == CONNECTING) {
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err != 0 || send_msg(c->fd, msg) < 0) {
                    failed = 1;
                } else {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl");
                    c->state = READING;
                    continue;
                }
            } else {
                int r = read_echo(c, buf);
                if (r == 0) continue;
                failed = r < 0;
            }
            close(c->fd);
            c->state = IDLE;
            active--;
            if (failed) {
                w->errors++;
            } else {
                w->total++;
                __atomic_store_n(&w->ops, w->ops + 1, __ATOMIC_RELAXED);
            }
            if (!stop) {
                if (churn_start(w, ep, c) == 0) active++;
                else w->errors++;
            }
        }
    }
    for (int i = 0; i < w->count; i++) {
        if (w->conns[i].state != IDLE) {
            close(w->conns[i].fd);
            w->unfinished++;
        }
    }
    close(ep);
    return NULL;
}

static unsigned long sum_ops(struct worker *workers, int threads) {
    unsigned long ops = 0;
    for (int t = 0; t < threads; t++) ops += __atomic_load_n(&workers[t].ops, __ATOMIC_RELAXED);
    return ops;
}

static unsigned long sum_idle(struct worker *workers, int threads) {
    unsigned long idle = 0;
    for (int t = 0; t < threads; t++)
        idle += __atomic_load_n(&workers[t].idle_ns, __ATOMIC_RELAXED);
    return idle;
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: %s pingpong|churn HOST PORT CONNS SECONDS WARMUP "
                "[THREADS [SIZE [block|spin]]]\n",
                argv[0]);
        return 2;
    }
    const char *mode = argv[1];
    int is_churn = strcmp(mode, "churn") == 0;
    if (!is_churn && strcmp(mode, "pingpong") != 0) {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    int conns = atoi(argv[4]);
    double seconds = atof(argv[5]), warmup = atof(argv[6]);
    int threads = argc > 7 ? atoi(argv[7]) : 1;
    if (argc > 8) size = (size_t)atol(argv[8]);
    if (argc > 9) {
        if (strcmp(argv[9], "spin") == 0) {
            poll_ms = 0;
        } else if (strcmp(argv[9], "block") != 0) {
            fprintf(stderr, "WAIT must be block or spin, not %s\n", argv[9]);
            return 2;
        }
    }
    if (conns < 1 || threads < 1 || threads > conns || size < 1 || size > MAX_SIZE) {
        fprintf(stderr, "need 1 <= THREADS <= CONNS and 1 <= SIZE <= %d\n", MAX_SIZE);
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[3]));
    if (inet_pton(AF_INET, argv[2], &addr.sin_addr) != 1) {
        fprintf(stderr, "bad IPv4 address %s\n", argv[2]);
        return 2;
    }

    struct worker *workers = calloc((size_t)threads, sizeof *workers);
    struct conn *all = calloc((size_t)conns, sizeof *all);
    if (!workers || !all) die("calloc");
    for (int t = 0, first = 0; t < threads; t++) {
        workers[t].count = conns / threads + (t < conns % threads);
        workers[t].conns = all + first;
        first += workers[t].count;
        if (pthread_create(&workers[t].thread, NULL, is_churn ? churn : pingpong, &workers[t]))
            die("pthread_create");
    }
    if (!is_churn) {
        while (__atomic_load_n(&ready, __ATOMIC_ACQUIRE) < threads) sleep_until(now() + 0.001);
    }

    sleep_until(now() + warmup);
    unsigned long ops0 = sum_ops(workers, threads), idle0 = sum_idle(workers, threads);
    double t0 = now();
    printf("start\n");
    fflush(stdout);
    sleep_until(t0 + seconds);
    unsigned long ops1 = sum_ops(workers, threads), idle1 = sum_idle(workers, threads);
    double t1 = now();
    printf("end\n");
    fflush(stdout);
    __atomic_store_n(&stopping, 1, __ATOMIC_RELEASE);

    unsigned long total = 0, errors = 0, unfinished = 0;
    int failed = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(workers[t].thread, NULL);
        total += workers[t].total;
        errors += workers[t].errors;
        unfinished += workers[t].unfinished;
        failed |= workers[t].failed;
    }
    double idle = poll_ms ? -1 : (double)(idle1 - idle0) / 1e9 / (t1 - t0) / threads;
    printf("result mode=%s ops=%lu seconds=%.6f total=%lu errors=%lu unfinished=%lu idle=%.4f\n",
           mode, ops1 - ops0, t1 - t0, total, errors, unfinished, idle);
    return failed ? 1 : 0;
}
