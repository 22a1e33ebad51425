/* cluster.h: starts real fsps-server processes on ephemeral loopback ports
 * for integration tests, and always stops them. */
#ifndef FSPS_TESTS_CLUSTER_H
#define FSPS_TESTS_CLUSTER_H

#include <stdint.h>
#include <sys/types.h>

#define CLUSTER_MAX 8

typedef struct {
  int n;
  pid_t pid[CLUSTER_MAX];
  int port[CLUSTER_MAX];
  char servers[CLUSTER_MAX * 32]; /* "127.0.0.1:p0,127.0.0.1:p1" */
  char dir[256];
} cluster;

/* test_cluster_start starts S servers for W workers with extra flags (a
 * NULL-terminated list, may be NULL) and waits until each listens.
 * Returns 0, or -1 after stopping whatever started. */
int test_cluster_start(cluster *c, int S, int W, const char *const *flags);

/* test_cluster_stop sends SIGTERM to every server and waits; returns the
 * number of servers that did not exit with status 0. */
int test_cluster_stop(cluster *c);

/* test_cluster_kill stops server s with SIGKILL (no clean-up). */
void test_cluster_kill(cluster *c, int s);

#endif
