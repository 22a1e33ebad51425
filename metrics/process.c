/* process.c: the standard process_* metrics every Prometheus client
 * library exports, read from /proc/self at each scrape. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics_int.h"

typedef struct {
  metrics_series *cpu, *rss, *vsize, *fds, *max_fds, *start;
  double boot_time;
} process_metrics;

/* boot_time reads btime (seconds since the epoch) from /proc/stat. */
static double boot_time(void) {
  FILE *f = fopen("/proc/stat", "r");
  char line[256];
  double t = 0;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "btime %lf", &t) == 1)
      break;
  if (f != NULL)
    fclose(f);
  return t;
}

/* read_stat reads utime, stime, starttime (ticks), vsize and rss (pages)
 * from /proc/self/stat; false if it cannot. */
static bool read_stat(double *cpu_ticks, double *start_ticks, double *vsize,
                      double *rss_pages) {
  char text[1024];
  FILE *f = fopen("/proc/self/stat", "r");
  size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
  if (f != NULL)
    fclose(f);
  text[n] = '\0';
  char *p = strrchr(text, ')'); /* the command name may hold spaces */
  unsigned long long ut, st, start, vs;
  long long rss;
  if (p == NULL || sscanf(p + 2,
                          "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu "
                          "%llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                          &ut, &st, &start, &vs, &rss) != 5)
    return false;
  *cpu_ticks = (double)(ut + st);
  *start_ticks = (double)start;
  *vsize = (double)vs;
  *rss_pages = (double)rss;
  return true;
}

/* open_fds counts /proc/self/fd's entries, less the one reading it. */
static double open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d == NULL)
    return 0;
  double n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.')
      n++;
  closedir(d);
  return n > 0 ? n - 1 : 0;
}

static void collect_process(void *arg) {
  process_metrics *m = arg;
  double cpu, start, vsize, rss, tick = (double)sysconf(_SC_CLK_TCK);
  if (read_stat(&cpu, &start, &vsize, &rss) && tick > 0) {
    metrics_set(m->cpu, cpu / tick);
    metrics_set(m->start, m->boot_time + start / tick);
    metrics_set(m->vsize, vsize);
    metrics_set(m->rss, rss * (double)sysconf(_SC_PAGESIZE));
  }
  metrics_set(m->fds, open_fds());
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    metrics_set(m->max_fds, rl.rlim_cur == RLIM_INFINITY ? -1.0
                                                         : (double)rl.rlim_cur);
}

int metrics_process_register(metrics_registry *r) {
  if (r == NULL || r->process != NULL)
    return -1;
  process_metrics *m = r->process = calloc(1, sizeof *m);
  if (m == NULL)
    return -1;
  m->cpu = metrics_counter_declare(r, "process_cpu_seconds_total",
                                   "Total user and system CPU time spent in seconds.");
  m->rss = metrics_gauge_declare(r, "process_resident_memory_bytes",
                                 "Resident memory size in bytes.");
  m->vsize = metrics_gauge_declare(r, "process_virtual_memory_bytes",
                                   "Virtual memory size in bytes.");
  m->fds = metrics_gauge_declare(r, "process_open_fds",
                                 "Number of open file descriptors.");
  m->max_fds = metrics_gauge_declare(r, "process_max_fds",
                                     "Maximum number of open file descriptors.");
  m->start = metrics_gauge_declare(r, "process_start_time_seconds",
                                   "Start time of the process since unix epoch in seconds.");
  m->boot_time = boot_time();
  if (!m->cpu || !m->rss || !m->vsize || !m->fds || !m->max_fds || !m->start)
    return -1;
  return metrics_on_collect(r, collect_process, m);
}
