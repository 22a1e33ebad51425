/* token.c: finding a client's bearer token (fsps_token_load) in a file or
 * the environment, as fsps's tools do, without ever printing it. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client_int.h"

#define TOKEN_FILE_MAX (64 << 10)

/* take checks token (len bytes, from `from`) and copies it into out. */
static int take(const char *token, size_t len, const char *from, char *out,
                size_t outlen, char *err, size_t errlen) {
  if (len >= outlen)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "%s: the token is longer than %zu bytes", from, outlen - 1);
  memcpy(out, token, len);
  out[len] = '\0';
  const char *why = rpc_token_check(out);
  if (why != NULL) {
    explicit_bzero(out, len);
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "%s: %s", from, why);
  }
  return FSPS_OK;
}

/* token_line finds the one line of text that is neither blank nor a
 * comment: [*t, *t + *n), trimmed. Returns how many such lines there are. */
static int token_line(const char *text, size_t len, const char **t, size_t *n) {
  int lines = 0;
  for (const char *p = text, *end = text + len; p < end;) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *e = nl ? nl : end, *b = p;
    p = nl ? nl + 1 : end;
    while (b < e && (*b == ' ' || *b == '\t'))
      b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
      e--;
    if (b == e || *b == '#')
      continue;
    if (lines++ == 0) {
      *t = b;
      *n = (size_t)(e - b);
    }
  }
  return lines;
}

/* check_file refuses a token file that is not private. */
static int check_file(int fd, const char *path, size_t *size, char *err,
                      size_t errlen) {
  struct stat st;
  if (fstat(fd, &st) != 0)
    return client_say(err, errlen, FSPS_IO, "token file %s: %s", path,
               strerror(errno));
  if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "token file %s is not a regular file of at most %d bytes", path,
               TOKEN_FILE_MAX);
  if (st.st_mode & (S_IROTH | S_IWOTH))
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "token file %s can be read or written by every user (mode "
               "%04o): chmod o-rwx it",
               path, (unsigned)(st.st_mode & 07777));
  *size = (size_t)st.st_size;
  return FSPS_OK;
}

static int from_text(const char *text, size_t len, const char *path, char *out,
                     size_t outlen, char *err, size_t errlen) {
  const char *t = NULL;
  size_t n = 0;
  int lines = token_line(text, len, &t, &n);
  char from[1100];
  snprintf(from, sizeof from, "token file %s", path);
  if (lines == 0)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "%s holds no token", from);
  if (lines > 1)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT,
               "%s holds more than one line besides blanks and comments: "
               "it must hold the token alone",
               from);
  return take(t, n, from, out, outlen, err, errlen);
}

static int from_file(const char *path, char *out, size_t outlen, char *err,
                     size_t errlen) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return client_say(err, errlen, FSPS_IO, "cannot read token file %s: %s", path,
               strerror(errno));
  size_t size = 0;
  char *buf = NULL;
  ssize_t got = 0;
  int rc = check_file(fd, path, &size, err, errlen);
  if (rc == FSPS_OK && (buf = malloc(size + 1)) == NULL)
    rc = client_say(err, errlen, FSPS_NOMEM, "out of memory");
  while (rc == FSPS_OK && (size_t)got < size) {
    ssize_t r = read(fd, buf + got, size - (size_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      rc = client_say(err, errlen, FSPS_IO, "cannot read token file %s: %s", path,
               strerror(errno));
    if (r <= 0)
      break;
    got += r;
  }
  close(fd);
  if (rc == FSPS_OK)
    rc = from_text(buf, (size_t)got, path, out, outlen, err, errlen);
  if (buf != NULL)
    explicit_bzero(buf, size);
  free(buf);
  return rc;
}

int fsps_token_load(const char *path, char *out, size_t outlen, char *err,
                    size_t errlen) {
  if (out == NULL || outlen == 0)
    return client_say(err, errlen, FSPS_INVALID_ARGUMENT, "no room for the token");
  out[0] = '\0';
  if (path != NULL && path[0] != '\0')
    return from_file(path, out, outlen, err, errlen);
  const char *file = getenv("FSPS_TOKEN_FILE");
  if (file != NULL && file[0] != '\0')
    return from_file(file, out, outlen, err, errlen);
  const char *value = getenv("FSPS_TOKEN");
  if (value != NULL && value[0] != '\0')
    return take(value, strlen(value), "FSPS_TOKEN", out, outlen, err, errlen);
  return client_say(err, errlen, FSPS_NOT_FOUND,
             "no token given (no token file, FSPS_TOKEN_FILE or FSPS_TOKEN)");
}
