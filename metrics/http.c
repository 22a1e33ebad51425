/* http.c: the /metrics endpoint and the pages beside it — a socket we bind
 * ourselves (so that a bad address or a port in use is a clear error before
 * anything serves), handed to libmicrohttpd, which does all of HTTP on a
 * thread of its own. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "metrics_int.h"

struct metrics_http {
  struct MHD_Daemon *daemon;
  metrics_registry *reg;
  int port;
  metrics_page pages[METRICS_MAX_PAGES]; /* fixed before the daemon starts */
  size_t npages;
};

/* Every answer may load nothing from elsewhere (no script, style, font or
 * image of another origin; inline ones and fetches of this server only),
 * is never cached, and is taken for the type it says it is. */
#define CSP                                                                    \
  "default-src 'none'; script-src 'unsafe-inline'; "                          \
  "style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "            \
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

/* split_addr cuts "host:port", "[v6]:port" or ":port" into host (NULL for
 * any) and port; false if it is not of that form. */
static bool split_addr(const char *addr, char *host, size_t hostlen,
                       const char **port) {
  const char *colon = strrchr(addr, ':');
  if (colon == NULL || colon[1] == '\0' ||
      strspn(colon + 1, "0123456789") != strlen(colon + 1))
    return false;
  size_t n = (size_t)(colon - addr);
  if (n >= 2 && addr[0] == '[' && addr[n - 1] == ']') {
    addr++;
    n -= 2;
  }
  if (n >= hostlen)
    return false;
  memcpy(host, addr, n);
  host[n] = '\0';
  *port = colon + 1;
  return true;
}

/* bind_listen makes a listening socket on ai; -errno on failure. */
static int bind_listen(const struct addrinfo *ai) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

/* open_listener resolves addr and binds it; the socket, or -1 with err. */
static int open_listener(const char *addr, char *err, size_t errlen) {
  char host[256];
  const char *port;
  if (!split_addr(addr, host, sizeof host, &port)) {
    snprintf(err, errlen, "metrics address '%s' is not host:port", addr);
    return -1;
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC,
                           .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
  if (g != 0) {
    snprintf(err, errlen, "cannot resolve metrics address '%s': %s", addr,
             gai_strerror(g));
    return -1;
  }
  int fd = bind_listen(res);
  freeaddrinfo(res);
  if (fd < 0)
    snprintf(err, errlen, "cannot listen for metrics on %s: %s", addr,
             strerror(-fd));
  return fd < 0 ? -1 : fd;
}

static int bound_port(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static enum MHD_Result reply(struct MHD_Connection *conn, unsigned code,
                             char *body, size_t len, const char *type) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, body, body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (r == NULL) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "Content-Security-Policy", CSP);
  enum MHD_Result rc = MHD_queue_response(conn, code, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result text(struct MHD_Connection *conn, unsigned code,
                            const char *msg) {
  return reply(conn, code, strdup(msg), strlen(msg), "text/plain");
}

/* not_found answers 404 naming what is served here. */
static enum MHD_Result not_found(struct MHD_Connection *conn,
                                 const metrics_http *h) {
  metrics_text t = {0};
  metrics_text_put(&t, "not found: try /metrics");
  for (size_t i = 0; i < h->npages; i++)
    metrics_text_printf(&t, ", %s", h->pages[i].path);
  metrics_text_put(&t, "\n");
  size_t len = 0;
  char *body = metrics_text_take(&t, &len);
  return reply(conn, MHD_HTTP_NOT_FOUND, body, len, "text/plain");
}

static const metrics_page *find_page(const metrics_http *h, const char *url) {
  for (size_t i = 0; i < h->npages; i++)
    if (strcmp(h->pages[i].path, url) == 0)
      return &h->pages[i];
  return NULL;
}

/* on_request answers GET (and HEAD, which libmicrohttpd answers without
 * the body) of /metrics and of the pages; 404 or 405 otherwise. */
static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_len, void **state) {
  (void)version, (void)upload, (void)upload_len, (void)state;
  metrics_http *h = cls;
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
    return text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n");
  const metrics_page *p = find_page(h, url);
  if (p == NULL && strcmp(url, "/metrics") != 0)
    return not_found(conn, h);
  size_t len = 0;
  char *body = p ? p->render(p->arg, &len) : metrics_render(h->reg, &len);
  if (body == NULL)
    return text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
  return reply(conn, MHD_HTTP_OK, body, len,
               p ? p->content_type : METRICS_CONTENT_TYPE);
}

metrics_http *metrics_http_start(metrics_registry *r, const char *addr,
                                 char *err, size_t errlen) {
  return metrics_http_start_pages(r, addr, NULL, 0, err, errlen);
}

metrics_http *metrics_http_start_pages(metrics_registry *r, const char *addr,
                                       const metrics_page *pages,
                                       size_t npages, char *err,
                                       size_t errlen) {
  if (npages > METRICS_MAX_PAGES) {
    snprintf(err, errlen, "too many pages for the metrics server");
    return NULL;
  }
  metrics_http *h = calloc(1, sizeof *h);
  int fd = h ? open_listener(addr, err, errlen) : -1;
  if (h == NULL)
    snprintf(err, errlen, "out of memory");
  if (fd < 0) {
    free(h);
    return NULL;
  }
  h->reg = r;
  h->port = bound_port(fd);
  if (npages > 0)
    memcpy(h->pages, pages, npages * sizeof *pages);
  h->npages = npages;
  h->daemon = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
      on_request, h, MHD_OPTION_LISTEN_SOCKET, (MHD_socket)fd,
      MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10, MHD_OPTION_END);
  if (h->daemon == NULL) {
    snprintf(err, errlen, "cannot start the metrics HTTP server on %s", addr);
    close(fd);
    free(h);
    return NULL;
  }
  return h;
}

int metrics_http_port(const metrics_http *h) {
  return h ? h->port : -1;
}

void metrics_http_stop(metrics_http *h) {
  if (h == NULL)
    return;
  MHD_stop_daemon(h->daemon); /* closes the listening socket too */
  free(h);
}
