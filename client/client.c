/* client.c: a client's life — options, connecting to every server, errors,
 * counters, and the timer thread that restarts calls after a backoff. */
#include <ctype.h>
#include <errno.h>
#include <malloc.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_int.h"

#define FSPS_STR_(x) #x
#define FSPS_STR(x) FSPS_STR_(x)

const char *fsps_version(void) {
  return FSPS_STR(FSPS_VERSION_MAJOR) "." FSPS_STR(
      FSPS_VERSION_MINOR) "." FSPS_STR(FSPS_VERSION_PATCH);
}

/* The fsps_options of 0.3, the last release before the struct grew: its
 * fields through io_threads. */
#define OPTIONS_0_3_SIZE (offsetof(fsps_options, io_threads) + sizeof(uint32_t))

static void options_defaults(fsps_options *o) {
  memset(o, 0, sizeof *o);
  o->size = sizeof *o;
  o->rank = 0;
  o->world = 1;
  o->mode = FSPS_BSP;
  o->prefetch = 1;
  o->reshard_after_forward = true;
  o->timeout_ms = CLIENT_DEFAULT_TIMEOUT_MS;
  o->retries = CLIENT_DEFAULT_RETRIES;
}

void fsps_options_init_size(fsps_options *o, size_t size) {
  if (o == NULL || size < sizeof o->size)
    return;
  fsps_options d;
  options_defaults(&d);
  memset(o, 0, size); /* a newer caller's fields this library lacks: 0 */
  memcpy(o, &d, size < sizeof d ? size : sizeof d);
  o->size = (uint32_t)size;
}

/* The name is in parentheses so that fsps.h's macro of the same name does
 * not expand here: this is the symbol programs built before 0.4 call, with
 * options of 0.3's size. */
void(fsps_options_init)(fsps_options *o) {
  fsps_options_init_size(o, OPTIONS_0_3_SIZE);
}

int client_fail(fsps_client *c, int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  va_end(ap);
  return rc;
}

int client_say(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err == NULL || errlen == 0)
    return rc;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return rc;
}

const char *fsps_last_error(const fsps_client *c) {
  return c ? c->err : "no client (NULL)";
}

uint32_t client_retries(const fsps_client *c) {
  return c->o.retries;
}

int64_t client_timeout_ms(const fsps_client *c) {
  return c->o.timeout_ms ? c->o.timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
}

uint64_t client_layer_n(const fsps_client *c, uint32_t l) {
  const shard_layer *L = c->spec ? shard_spec_layer(c->spec, l) : NULL;
  return L ? L->n : 0;
}

shard_wire_dtype client_wire_dtype(const fsps_client *c) {
  return c->spec ? shard_spec_wire_dtype(c->spec) : SHARD_WIRE_FP32;
}

bool client_plan_next(uint64_t n, uint32_t S, uint32_t *s, uint64_t *off,
                      uint64_t *cnt) {
  for (; *s < S; (*s)++) {
    shard_slice(n, S, *s, off, cnt);
    if (*cnt > 0)
      return true;
  }
  return false;
}

int64_t client_backoff_ms(uint32_t attempt) {
  int64_t ms = CLIENT_BACKOFF_FIRST_MS;
  for (uint32_t i = 1; i < attempt && ms < CLIENT_BACKOFF_MAX_MS; i++)
    ms *= 2;
  return ms < CLIENT_BACKOFF_MAX_MS ? ms : CLIENT_BACKOFF_MAX_MS;
}

int64_t client_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void client_wait(fsps_client *c) {
  int64_t t0 = client_now_ns();
  pthread_cond_wait(&c->cv, &c->mu);
  c->wait_s += (double)(client_now_ns() - t0) * 1e-9;
}

double fsps_wait_seconds(const fsps_client *c) {
  return c ? c->wait_s : 0.0;
}

uint64_t fsps_peak_buffer_bytes(const fsps_client *c) {
  if (c == NULL)
    return 0;
  pthread_mutex_lock(&((fsps_client *)c)->mu); /* pushes update it */
  uint64_t peak = c->peak_bytes;
  pthread_mutex_unlock(&((fsps_client *)c)->mu);
  return peak;
}

void fsps_bytes_moved(const fsps_client *c, uint64_t *gathered,
                      uint64_t *pushed) {
  if (gathered != NULL)
    *gathered = c ? c->gathered : 0;
  if (pushed != NULL)
    *pushed = c ? c->pushed : 0;
}

int fsps_tune_malloc(void) {
  /* Large blocks then come from the heap and stay mapped when freed, so a
   * message buffer reuses pages that are already faulted in. */
  bool ok = mallopt(M_MMAP_THRESHOLD, 256 << 20) == 1;
  ok = mallopt(M_TRIM_THRESHOLD, 512 << 20) == 1 && ok;
  return ok ? FSPS_OK : FSPS_INTERNAL;
}

/* ---- server list ---- */

static bool all_digits(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!isdigit((unsigned char)*s))
      return false;
  return true;
}

/* check_host_port returns NULL when a is "host:port" (host a name, an IPv4
 * address or a bracketed IPv6 address), else why not. */
static const char *check_host_port(const char *a) {
  const char *colon = strrchr(a, ':');
  if (colon == NULL)
    return "expected host:port";
  if (colon == a)
    return "the host is empty";
  if (!all_digits(colon + 1) || strlen(colon + 1) > 5 || atoi(colon + 1) < 1 ||
      atoi(colon + 1) > 65535)
    return "the port must be a number from 1 to 65535";
  bool bracket = a[0] == '[';
  if (bracket && colon[-1] != ']')
    return "an IPv6 address needs brackets: [addr]:port";
  if (!bracket && memchr(a, ':', (size_t)(colon - a)) != NULL)
    return "an IPv6 address needs brackets: [addr]:port";
  for (const char *p = a; p < colon; p++)
    if (isspace((unsigned char)*p) || *p == '/')
      return "the host contains a space or '/'";
  return NULL;
}

/* check_address accepts host:port and gRPC's explicit target schemes. */
static const char *check_address(const char *a) {
  if (*a == '\0')
    return "empty address";
  if (strncmp(a, "unix:", 5) == 0 || strncmp(a, "dns:", 4) == 0 ||
      strncmp(a, "ipv4:", 5) == 0 || strncmp(a, "ipv6:", 5) == 0)
    return a[strcspn(a, ":") + 1] ? NULL : "nothing after the scheme";
  return check_host_port(a);
}

static char *trim(char *s) {
  while (isspace((unsigned char)*s))
    s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1]))
    *--e = '\0';
  return s;
}

/* split_servers cuts c->servers in place into c->addr[0..S). */
static int split_servers(fsps_client *c, char *err, size_t errlen) {
  uint32_t n = 1;
  for (const char *p = c->servers; *p; p++)
    n += *p == ',';
  if (n > CLIENT_MAX_SERVERS)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "%u servers listed; at most %d are supported", n,
               CLIENT_MAX_SERVERS);
  c->addr = calloc(n, sizeof *c->addr);
  if (c->addr == NULL)
    return client_say(err, errlen, FSPS_NOMEM, "out of memory");
  char *p = c->servers;
  for (uint32_t i = 0; i < n; i++) {
    char *comma = strchr(p, ',');
    if (comma != NULL)
      *comma = '\0';
    char *a = trim(p);
    p = comma ? comma + 1 : p + strlen(p);
    const char *why = check_address(a);
    if (why != NULL)
      return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
                 "server %u of %u ('%s') in '%s': %s", i, n, a, c->o.servers,
                 why);
    c->addr[i] = a;
  }
  c->S = n;
  return FSPS_OK;
}

/* ---- connect and close ---- */

static int check_options(const fsps_options *o, char *err, size_t errlen) {
  if (o->servers == NULL || o->servers[strspn(o->servers, " \t,")] == '\0')
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "no servers given: expected \"host:port,host:port\"");
  if (o->world == 0 || o->rank >= o->world)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "rank %u is not in 0..world-1 (world %u)", o->rank, o->world);
  if (o->mode != FSPS_BSP && o->mode != FSPS_SSP && o->mode != FSPS_ASP)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "unknown mode %d",
               (int)o->mode);
  if (o->timeout_ms < 0)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "timeout_ms %lld is negative", (long long)o->timeout_ms);
  if ((unsigned)o->wire_dtype > FSPS_WIRE_BF16)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
                      "unknown wire_dtype %d (FSPS_WIRE_AS_SPEC, "
                      "FSPS_WIRE_FP32 or FSPS_WIRE_BF16)",
                      (int)o->wire_dtype);
  const char *why = o->token && o->token[0] ? rpc_token_check(o->token) : NULL;
  if (why != NULL) /* never the token itself */
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "fsps_options.token: %s",
               why);
  return FSPS_OK;
}

static void *timer_main(void *arg);

static int start_threads(fsps_client *c, char *err, size_t errlen) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&c->timer_cv, &attr);
  pthread_condattr_destroy(&attr);
  pthread_mutex_init(&c->mu, NULL);
  pthread_mutex_init(&c->cancel_mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  if (pthread_create(&c->timer, NULL, timer_main, c) != 0)
    return client_say(err, errlen, FSPS_INTERNAL, "cannot start the retry thread");
  c->timer_started = true;
  return FSPS_OK;
}

/* open_loops starts the threads that run the channels' streams: one unless
 * o.io_threads asks for more (never more than one per server). */
static int open_loops(fsps_client *c, char *err, size_t errlen) {
  uint32_t n = c->o.io_threads ? c->o.io_threads : 1;
  c->nloops = n < c->S ? n : c->S;
  c->loops = calloc(c->nloops, sizeof *c->loops);
  if (c->loops == NULL)
    return client_say(err, errlen, FSPS_NOMEM, "out of memory");
  for (uint32_t i = 0; i < c->nloops; i++) {
    rpc_status st;
    if ((c->loops[i] = rpc_loop_create(&st)) == NULL)
      return client_say(err, errlen, st.code, "%s", st.msg);
  }
  return FSPS_OK;
}

/* open_tls reads the TLS files, once for every channel. The paths are not
 * kept: c->o's copies are cleared, the caller's strings may go away. */
static int open_tls(fsps_client *c, char *err, size_t errlen) {
  fsps_options *o = &c->o;
  int rc = FSPS_OK;
  if (o->tls_ca == NULL && (o->tls_cert || o->tls_key || o->tls_server_name))
    rc = client_say(err, errlen, FSPS_INVALID_ARGUMENT,
             "TLS: tls_cert, tls_key and tls_server_name need tls_ca (the "
             "CA file that signs the servers' certificates)");
  else if (o->tls_ca != NULL && (o->tls_cert == NULL) != (o->tls_key == NULL))
    rc = client_say(err, errlen, FSPS_INVALID_ARGUMENT,
             "TLS: tls_cert and tls_key go together: give the client "
             "certificate and its key");
  rpc_client_tls t = {o->tls_ca, o->tls_cert, o->tls_key, o->tls_server_name};
  rpc_status st;
  if (rc == FSPS_OK && o->tls_ca != NULL &&
      (c->creds = rpc_creds_create(&t, &st)) == NULL)
    rc = client_say(err, errlen, st.code, "TLS: %s", st.msg);
  o->tls_ca = o->tls_cert = o->tls_key = o->tls_server_name = NULL;
  return rc;
}

static int open_channels(fsps_client *c, char *err, size_t errlen) {
  c->ch = calloc(c->S, sizeof *c->ch);
  c->incarnation = calloc(c->S, sizeof *c->incarnation);
  if (c->ch == NULL || c->incarnation == NULL)
    return client_say(err, errlen, FSPS_NOMEM, "out of memory");
  for (uint32_t s = 0; s < c->S; s++) {
    rpc_status st;
    c->ch[s] = rpc_channel_create_tls(c->addr[s], c->loops[s % c->nloops],
                                      WIRE_MAX_MESSAGE_BYTES, c->creds, &st);
    if (c->ch[s] == NULL ||
        rpc_channel_set_token(c->ch[s], c->o.token, &st) != FSPS_OK)
      return client_say(err, errlen, st.code, "server %u (%s): %s", s, c->addr[s],
                 st.msg);
  }
  return FSPS_OK;
}

/* copy_options reads the caller's options into *dst: the fields a caller
 * built against an older header knows (o->size bytes) over the defaults. */
static int copy_options(const fsps_options *o, fsps_options *dst, char *err,
                        size_t errlen) {
  if (o->size < offsetof(fsps_options, io_threads) + sizeof o->io_threads)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "fsps_options.size is %u: fill the options with "
               "fsps_options_init before setting them",
               o->size);
  if (o->size > sizeof *o)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "fsps_options.size is %u but this libfsps %s knows %zu bytes: "
               "the program was built against a newer libfsps",
               o->size, fsps_version(), sizeof *o);
  options_defaults(dst);
  memcpy(dst, o, o->size);
  dst->size = sizeof *dst;
  return check_options(dst, err, errlen);
}

int fsps_connect(const fsps_options *o, fsps_client **out, char *err,
                 size_t errlen) {
  if (out == NULL || o == NULL)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "NULL options or out");
  *out = NULL;
  fsps_options opt;
  int rc = copy_options(o, &opt, err, errlen);
  if (rc != FSPS_OK)
    return rc;
  fsps_client *c = calloc(1, sizeof *c);
  if (c == NULL || (c->servers = strdup(o->servers)) == NULL) {
    free(c);
    return client_say(err, errlen, FSPS_NOMEM, "out of memory");
  }
  c->o = opt;
  rc = split_servers(c, err, errlen);
  if (rc == FSPS_OK)
    rc = open_tls(c, err, errlen);
  if (rc == FSPS_OK)
    rc = start_threads(c, err, errlen);
  if (rc == FSPS_OK)
    rc = open_loops(c, err, errlen);
  if (rc == FSPS_OK)
    rc = open_channels(c, err, errlen);
  if (rc != FSPS_OK) {
    fsps_close(c);
    return rc;
  }
  c->o.servers = c->servers; /* the caller's string may go away */
  c->o.token = NULL;         /* likewise; each channel holds a copy */
  *out = c;
  return FSPS_OK;
}

static void stop_timer(fsps_client *c) {
  if (!c->timer_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->stopping = true;
  pthread_cond_signal(&c->timer_cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->timer, NULL);
  c->timer_started = false;
}

void fsps_close(fsps_client *c) {
  if (c == NULL)
    return;
  bool threads = c->timer_started;
  if (threads) {
    client_sched_abandon(c);
    client_push_wait_all(c);
  }
  stop_timer(c);
  for (uint32_t s = 0; c->ch != NULL && s < c->S; s++)
    rpc_channel_destroy(c->ch[s]);
  for (uint32_t i = 0; c->loops != NULL && i < c->nloops; i++)
    rpc_loop_destroy(c->loops[i]);
  rpc_creds_destroy(c->creds);
  if (threads) {
    client_sched_destroy(c);
    client_pool_destroy(c);
    client_push_free_stages(c);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->cancel_mu);
    pthread_cond_destroy(&c->cv);
    pthread_cond_destroy(&c->timer_cv);
  }
  shard_spec_destroy(c->spec);
  free(c->ch);
  free(c->incarnation);
  free(c->loops);
  free(c->addr);
  free(c->servers);
  free(c);
}

int client_adopt_spec(fsps_client *c, const shard_spec *spec) {
  if (c->spec != NULL) {
    if (shard_spec_equal(c->spec, spec))
      return FSPS_OK;
    char have[17], want[17];
    shard_spec_hash_hex(shard_spec_hash(c->spec), have);
    shard_spec_hash_hex(shard_spec_hash(spec), want);
    return client_fail(c, FSPS_FAILED_PRECONDITION,
                       "this client already holds model %s; it cannot switch "
                       "to %s (connect a new client)",
                       have, want);
  }
  c->spec = client_spec_clone(spec);
  if (c->spec == NULL)
    return client_fail(c, FSPS_NOMEM, "out of memory copying the spec");
  c->L = shard_spec_num_layers(c->spec);
  if (client_sched_init(c) != FSPS_OK) {
    shard_spec_destroy(c->spec);
    c->spec = NULL;
    c->L = 0;
    return client_fail(c, FSPS_NOMEM, "out of memory for the layer table");
  }
  return FSPS_OK;
}

/* ---- retry timer ---- */

/* queue_at queues it to fire at due_ns (c->mu held). */
static void queue_at(fsps_client *c, retry_item *it, int64_t due_ns) {
  it->due_ns = due_ns;
  retry_item **p = &c->retries;
  while (*p != NULL && (*p)->due_ns <= it->due_ns)
    p = &(*p)->next;
  it->next = *p;
  *p = it;
  pthread_cond_signal(&c->timer_cv);
}

bool client_retry_schedule(fsps_client *c, retry_item *it, uint32_t attempt) {
  if (c->stopping)
    return false;
  queue_at(c, it, client_now_ns() + client_backoff_ms(attempt) * 1000000);
  return true;
}

void client_defer_locked(fsps_client *c, retry_item *it) {
  retry_item **p = &c->deferred;
  while (*p != NULL)
    p = &(*p)->next;
  it->next = NULL;
  it->after = c->push_next;
  *p = it;
}

void client_run_deferred_locked(fsps_client *c) {
  /* Items wait for ever later pushes, so the ready ones lead the list.
   * Once stopping, the timer thread's last sweep takes them instead. */
  uint64_t done_below = client_push_low_water_locked(c);
  while (c->deferred != NULL && c->deferred->after <= done_below &&
         !c->stopping) {
    retry_item *it = c->deferred;
    c->deferred = it->next;
    queue_at(c, it, client_now_ns());
  }
}

/* wait_until waits on the timer condition until due_ns (c->mu held). */
static void wait_until(fsps_client *c, int64_t due_ns) {
  struct timespec ts = {.tv_sec = (time_t)(due_ns / 1000000000),
                        .tv_nsec = (long)(due_ns % 1000000000)};
  int rc = pthread_cond_timedwait(&c->timer_cv, &c->mu, &ts);
  (void)rc; /* timeouts and wake-ups alike lead back to the checks */
}

/* pop_due removes and returns the first retry that is due, or NULL after
 * waiting a while (c->mu held). */
static retry_item *pop_due(fsps_client *c) {
  if (c->retries == NULL) {
    pthread_cond_wait(&c->timer_cv, &c->mu);
    return NULL;
  }
  if (c->retries->due_ns > client_now_ns()) {
    wait_until(c, c->retries->due_ns);
    return NULL;
  }
  retry_item *it = c->retries;
  c->retries = it->next;
  return it;
}

/* pop_any removes and returns a queued or deferred item, or NULL (c->mu
 * held). */
static retry_item *pop_any(fsps_client *c) {
  retry_item **head = c->retries != NULL ? &c->retries : &c->deferred;
  retry_item *it = *head;
  if (it != NULL)
    *head = it->next;
  return it;
}

/* timer_main restarts calls whose backoff has passed and starts deferred
 * ones; at close it finishes those still waiting as cancelled. fire runs
 * without c->mu. */
static void *timer_main(void *arg) {
  fsps_client *c = arg;
  pthread_mutex_lock(&c->mu);
  while (!c->stopping) {
    retry_item *it = pop_due(c);
    if (it == NULL)
      continue;
    pthread_mutex_unlock(&c->mu);
    it->fire(it, false);
    pthread_mutex_lock(&c->mu);
  }
  for (retry_item *it; (it = pop_any(c)) != NULL;) {
    pthread_mutex_unlock(&c->mu);
    it->fire(it, true);
    pthread_mutex_lock(&c->mu);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}
