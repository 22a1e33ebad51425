/* auth.c: the token file's parser, the table of token digests with its
 * constant-time lookup, the bearer header's form, and the role table. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "auth.h"
#include "wire.h"

typedef struct {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  auth_role role;
  uint32_t line;
} auth_entry;

struct server_tokens {
  size_t n, cap;
  auth_entry *e;
};

static int fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -1;
}

/* ---- parsing ---- */

static bool blank(char ch) {
  return ch == ' ' || ch == '\t';
}

/* next_word sets [*w, *w + *wl) to the next word of [*p, e) and moves *p
 * past it; false when only blanks are left. */
static bool next_word(const char **p, const char *e, const char **w,
                      size_t *wl) {
  while (*p < e && blank(**p))
    (*p)++;
  if (*p == e)
    return false;
  *w = *p;
  while (*p < e && !blank(**p))
    (*p)++;
  *wl = (size_t)(*p - *w);
  return true;
}

static int role_of(const char *w, size_t n) {
  static const char *const names[] = {"reader", "worker", "admin"};
  for (int r = 0; r < 3; r++)
    if (strlen(names[r]) == n && memcmp(names[r], w, n) == 0)
      return r + AUTH_READER;
  return -1;
}

/* shown tells whether a word that is not a role may be quoted: only a
 * short word of letters, which cannot be a token (at least 16 bytes) of
 * this file and is unlikely to be any other secret. */
static bool shown(const char *w, size_t n) {
  if (n > 12)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!((w[i] >= 'a' && w[i] <= 'z') || (w[i] >= 'A' && w[i] <= 'Z')))
      return false;
  return true;
}

static int check_role(const char *w, size_t n, const char *where, char *err,
                      size_t errlen) {
  int role = role_of(w, n);
  if (role >= 0)
    return role;
  if (shown(w, n))
    return fail(err, errlen,
                "%s: unknown role '%.*s' (the first word must be worker, "
                "reader or admin)",
                where, (int)n, w);
  return fail(err, errlen,
              "%s: unknown role (not shown: it may be a token; the first "
              "word must be worker, reader or admin)",
              where);
}

static int check_token(const char *w, size_t n, const char *where, char *err,
                       size_t errlen) {
  if (n < AUTH_TOKEN_MIN)
    return fail(err, errlen,
                "%s: the token is %zu characters long; a token needs at "
                "least %d (make one with: openssl rand -hex 32)",
                where, n, AUTH_TOKEN_MIN);
  if (n > AUTH_TOKEN_MAX)
    return fail(err, errlen, "%s: the token is longer than %d characters",
                where, AUTH_TOKEN_MAX);
  for (size_t i = 0; i < n; i++)
    if (w[i] < 0x21 || w[i] > 0x7e)
      return fail(err, errlen,
                  "%s: character %zu of the token is not visible ASCII, "
                  "which a gRPC header cannot carry",
                  where, i + 1);
  return 0;
}

/* add appends an entry, refusing a token the table holds already. */
static int add(server_tokens *t, const auth_entry *en, const char *where,
               char *err, size_t errlen) {
  for (size_t i = 0; i < t->n; i++)
    if (memcmp(t->e[i].digest, en->digest, sizeof en->digest) == 0)
      return fail(err, errlen,
                  "%s: the same token as line %u (a token has one role)", where,
                  t->e[i].line);
  if (t->n == t->cap) {
    size_t cap = t->cap ? 2 * t->cap : 8;
    auth_entry *e = realloc(t->e, cap * sizeof *e);
    if (e == NULL)
      return fail(err, errlen, "out of memory");
    t->e = e;
    t->cap = cap;
  }
  t->e[t->n++] = *en;
  return 0;
}

/* parse_line reads line number `line`, [p, e) without its newline. */
static int parse_line(server_tokens *t, const char *p, const char *e,
                      uint32_t line, const char *name, char *err,
                      size_t errlen) {
  if (e > p && e[-1] == '\r')
    e--;
  const char *w[3];
  size_t wl[3], n = 0;
  while (n < 3 && next_word(&p, e, &w[n], &wl[n]))
    n++;
  if (n == 0 || w[0][0] == '#')
    return 0;
  char where[1100];
  snprintf(where, sizeof where, "%s line %u", name, line);
  if (n != 2)
    return fail(err, errlen, "%s: expected `ROLE TOKEN`, found %s word%s",
                where, n == 1 ? "one" : "more than two", n == 1 ? "" : "s");
  auth_entry en = {.line = line};
  int role = check_role(w[0], wl[0], where, err, errlen);
  if (role < 0 || check_token(w[1], wl[1], where, err, errlen) != 0)
    return -1;
  en.role = (auth_role)role;
  SHA256((const unsigned char *)w[1], wl[1], en.digest);
  int rc = add(t, &en, where, err, errlen);
  OPENSSL_cleanse(&en, sizeof en);
  return rc;
}

server_tokens *server_tokens_parse(const char *text, size_t len,
                                   const char *name, char *err, size_t errlen) {
  server_tokens *t = calloc(1, sizeof *t);
  if (t == NULL) {
    fail(err, errlen, "out of memory");
    return NULL;
  }
  const char *p = text, *end = text + len;
  int rc = 0;
  for (uint32_t line = 1; rc == 0 && p < end; line++) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end;
    rc = parse_line(t, p, e, line, name, err, errlen);
    p = nl ? nl + 1 : end;
  }
  if (rc == 0 && t->n == 0)
    rc = fail(err, errlen,
              "%s holds no token (every line is blank or a comment): the "
              "server would refuse every call",
              name);
  if (rc != 0) {
    server_tokens_free(t);
    return NULL;
  }
  return t;
}

/* ---- the file ---- */

/* check_file refuses what the token file must not be. */
static int check_file(int fd, const char *path, size_t *size, char *err,
                      size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return fail(err, errlen, "cannot stat %s: %s", path, strerror(errno));
  if (!S_ISREG(st.st_mode))
    return fail(err, errlen, "%s is not a regular file", path);
  if (st.st_mode & (S_IROTH | S_IWOTH))
    return fail(err, errlen,
                "%s can be read or written by every user (mode %04o): "
                "chmod o-rwx it (on Kubernetes, mount its Secret with "
                "defaultMode 0440 or 0400)",
                path, (unsigned)(st.st_mode & 07777));
  if (st.st_size > AUTH_FILE_MAX)
    return fail(err, errlen, "%s is larger than %d bytes", path, AUTH_FILE_MAX);
  *size = (size_t)st.st_size;
  return 0;
}

/* read_all reads up to cap bytes of fd into buf; -1 on a read error. */
static ssize_t read_all(int fd, char *buf, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t n = read(fd, buf + got, cap - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    if (n == 0)
      break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

server_tokens *server_tokens_read(const char *path, char *err, size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
    return NULL;
  }
  size_t size = 0;
  char *buf = NULL;
  ssize_t got = -1;
  if (check_file(fd, path, &size, err, errlen) == 0 &&
      (buf = malloc(size + 1)) == NULL)
    fail(err, errlen, "out of memory");
  if (buf != NULL && (got = read_all(fd, buf, size)) < 0)
    fail(err, errlen, "cannot read %s: %s", path, strerror(errno));
  close(fd);
  server_tokens *t = NULL;
  if (got >= 0)
    t = server_tokens_parse(buf, (size_t)got, path, err, errlen);
  if (buf != NULL) {
    OPENSSL_cleanse(buf, size);
    free(buf);
  }
  return t;
}

void server_tokens_free(server_tokens *t) {
  if (t == NULL)
    return;
  if (t->e != NULL)
    OPENSSL_cleanse(t->e, t->cap * sizeof *t->e);
  free(t->e);
  free(t);
}

uint32_t server_tokens_count(const server_tokens *t, auth_role role) {
  uint32_t n = 0;
  for (size_t i = 0; i < t->n; i++)
    n += role == AUTH_OPEN || t->e[i].role == role;
  return n;
}

int server_tokens_find(const server_tokens *t, const char *token, size_t len) {
  uint8_t d[SHA256_DIGEST_LENGTH];
  SHA256((const unsigned char *)token, len, d);
  unsigned found = 0; /* the matching entry's role + 1; tokens are unique */
  for (size_t i = 0; i < t->n; i++) {
    unsigned eq = CRYPTO_memcmp(d, t->e[i].digest, sizeof d) == 0;
    found |= (0u - eq) & ((unsigned)t->e[i].role + 1u);
  }
  OPENSSL_cleanse(d, sizeof d);
  return (int)found - 1;
}

bool server_auth_bearer(const char *val, size_t len, const char **tok,
                        size_t *toklen) {
  static const char scheme[] = "Bearer";
  size_t k = sizeof scheme - 1;
  if (len <= k || strncasecmp(val, scheme, k) != 0 || !blank(val[k]))
    return false;
  size_t i = k;
  while (i < len && blank(val[i]))
    i++;
  size_t j = i;
  while (j < len && val[j] >= 0x21 && val[j] <= 0x7e)
    j++;
  if (j == i || j != len)
    return false;
  *tok = val + i;
  *toklen = j - i;
  return true;
}

/* ---- rights ---- */

/* Each method's right for AUTH_OPEN, reader, worker, admin. */
static const struct {
  const char *path;
  auth_right r[4];
} rights[] = {
    {WIRE_PATH_INIT, {AUTH_ALLOW, AUTH_DENY, AUTH_JOIN, AUTH_ALLOW}},
    {WIRE_PATH_PULL, {AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW}},
    {WIRE_PATH_PUSH, {AUTH_ALLOW, AUTH_DENY, AUTH_ALLOW, AUTH_ALLOW}},
    {WIRE_PATH_STATUS, {AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW}},
    {WIRE_PATH_CHECKPOINT, {AUTH_ALLOW, AUTH_DENY, AUTH_DENY, AUTH_ALLOW}},
    {WIRE_PATH_ROLLBACK, {AUTH_ALLOW, AUTH_DENY, AUTH_DENY, AUTH_ALLOW}},
    {WIRE_PATH_SET_VALUES, {AUTH_ALLOW, AUTH_DENY, AUTH_DENY, AUTH_ALLOW}},
    {WIRE_PATH_HEALTH_CHECK, {AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW, AUTH_ALLOW}},
};
_Static_assert(sizeof rights / sizeof rights[0] == WIRE_NUM_METHODS,
               "a right for every method of wire.h");

bool server_auth_needs_token(const char *path) {
  static const char health[] = "/" WIRE_HEALTH_SERVICE "/";
  return strncmp(path, health, sizeof health - 1) != 0;
}

auth_right server_auth_may(auth_role role, const char *path) {
  if ((unsigned)role > AUTH_ADMIN)
    return AUTH_DENY;
  for (size_t i = 0; i < sizeof rights / sizeof rights[0]; i++)
    if (strcmp(rights[i].path, path) == 0)
      return rights[i].r[role];
  return AUTH_ALLOW;
}

const char *server_auth_role_name(auth_role role) {
  switch (role) {
  case AUTH_READER:
    return "reader";
  case AUTH_WORKER:
    return "worker";
  case AUTH_ADMIN:
    return "admin";
  default:
    return "open";
  }
}

const char *server_auth_role_rights(auth_role role) {
  switch (role) {
  case AUTH_READER:
    return "Pull and Status";
  case AUTH_WORKER:
    return "Init of the declared model, Pull, Push and Status";
  default:
    return "every method";
  }
}

const char *server_auth_method_name(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}
