/* cluster.c: real fsps-server processes for the integration tests. The
 * binary is FSPS_SERVER_BIN (set by CMake), each server on port 0 writes
 * the port it bound to a file in a private temporary folder. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cluster.h"

#ifndef FSPS_SERVER_BIN
#error "FSPS_SERVER_BIN must name the fsps-server binary"
#endif

static pid_t spawn(const cluster *c, int s, int S, int W,
                   const char *const *flags) {
  char idx[16], num[16], workers[16], port_file[300];
  snprintf(idx, sizeof idx, "%d", s);
  snprintf(num, sizeof num, "%d", S);
  snprintf(workers, sizeof workers, "%d", W);
  snprintf(port_file, sizeof port_file, "%s/port%d", c->dir, s);
  const char *argv[32] = {
      FSPS_SERVER_BIN, "--listen",    "127.0.0.1:0", "--index", idx,
      "--num-servers", num,           "--workers",   workers,   "--port-file",
      port_file,       "--log-level", "warn"};
  int n = 13;
  for (int i = 0; flags && flags[i] && n < 31; i++)
    argv[n++] = flags[i];
  argv[n] = NULL;
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
    execv(FSPS_SERVER_BIN, (char *const *)argv);
    _exit(127);
  }
  return pid;
}

static int read_port(const cluster *c, int s) {
  char path[300];
  snprintf(path, sizeof path, "%s/port%d", c->dir, s);
  FILE *f = fopen(path, "r");
  int port = -1;
  if (f == NULL)
    return -1;
  if (fscanf(f, "%d", &port) != 1)
    port = -1;
  fclose(f);
  return port;
}

static int wait_ports(cluster *c) {
  for (int tries = 0; tries < 2000; tries++) {
    int ready = 0;
    for (int s = 0; s < c->n; s++) {
      if (c->port[s] <= 0)
        c->port[s] = read_port(c, s);
      ready += c->port[s] > 0;
      if (waitpid(c->pid[s], NULL, WNOHANG) == c->pid[s]) {
        c->pid[s] = 0;
        return -1; /* a server died at start-up */
      }
    }
    if (ready == c->n)
      return 0;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  return -1;
}

int test_cluster_start(cluster *c, int S, int W, const char *const *flags) {
  memset(c, 0, sizeof *c);
  snprintf(c->dir, sizeof c->dir, "/tmp/fsps-test-XXXXXX");
  if (S > CLUSTER_MAX || mkdtemp(c->dir) == NULL)
    return -1;
  c->n = S;
  for (int s = 0; s < S; s++)
    c->pid[s] = spawn(c, s, S, W, flags);
  if (wait_ports(c) != 0) {
    test_cluster_stop(c);
    return -1;
  }
  size_t off = 0;
  for (int s = 0; s < S; s++)
    off += (size_t)snprintf(c->servers + off, sizeof c->servers - off,
                            "%s127.0.0.1:%d", s ? "," : "", c->port[s]);
  return 0;
}

int test_cluster_stop(cluster *c) {
  int bad = 0;
  for (int s = 0; s < c->n; s++)
    if (c->pid[s] > 0)
      kill(c->pid[s], SIGTERM);
  for (int s = 0; s < c->n; s++) {
    int status = 0;
    if (c->pid[s] > 0 && waitpid(c->pid[s], &status, 0) == c->pid[s])
      bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    c->pid[s] = 0;
    char path[300];
    snprintf(path, sizeof path, "%s/port%d", c->dir, s);
    unlink(path);
  }
  if (c->dir[0])
    rmdir(c->dir);
  return bad;
}

void test_cluster_kill(cluster *c, int s) {
  if (c->pid[s] > 0) {
    kill(c->pid[s], SIGKILL);
    waitpid(c->pid[s], NULL, 0);
    c->pid[s] = 0;
  }
}
