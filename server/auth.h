/* auth.h: bearer tokens with roles — the token file (--auth-tokens), the
 * table it becomes, constant-time lookups, and which role may call which
 * method. The gate that applies them to calls is server_auth (gate.h). */
#ifndef FSPS_SERVER_AUTH_H
#define FSPS_SERVER_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a caller may do. AUTH_OPEN is a call let in without a token: every
 * call of a server started without --auth-tokens, and health checks. */
typedef enum {
  AUTH_OPEN = 0,
  AUTH_READER = 1, /* Pull, Status */
  AUTH_WORKER = 2, /* Init of the declared model, Pull, Push, Status */
  AUTH_ADMIN = 3,  /* everything */
} auth_role;

#define AUTH_TOKEN_MIN 16   /* bytes; shorter tokens are refused */
#define AUTH_TOKEN_MAX 4096 /* bytes (RPC_TOKEN_MAX) */
#define AUTH_FILE_MAX (1 << 20)

typedef struct server_tokens server_tokens;

/* server_tokens_parse reads a token file's text: one `ROLE TOKEN` pair per
 * line, ROLE worker, reader or admin, TOKEN 16 to 4096 visible ASCII
 * characters; blank lines and lines whose first non-blank character is #
 * are skipped; a CR before a line's end is ignored. name (the file) starts
 * every message. Returns the table, or NULL with err naming the line for a
 * malformed line, an unknown role, a duplicate token, or no token at all
 * (or out of memory). Messages never quote a token. */
server_tokens *server_tokens_parse(const char *text, size_t len,
                                   const char *name, char *err, size_t errlen);

/* server_tokens_read reads and parses the file at path. The file must be a
 * regular file no larger than AUTH_FILE_MAX that other users can neither
 * read nor write (mode o-rwx); otherwise NULL with err saying why. */
server_tokens *server_tokens_read(const char *path, char *err, size_t errlen);

/* server_tokens_free frees t (NULL is fine), wiping the digests first. */
void server_tokens_free(server_tokens *t);

/* server_tokens_count returns how many tokens of role t holds (AUTH_OPEN: all
 * of them). */
uint32_t server_tokens_count(const server_tokens *t, auth_role role);

/* server_tokens_find returns the role of token (len bytes), or -1 when t does
 * not hold it. It compares SHA-256 digests, visiting every entry whatever
 * matches, with CRYPTO_memcmp: its time depends on neither where nor
 * whether the token differs from one held, only on the table's size and
 * the token's length. Thread-safe on a table nobody frees meanwhile. */
int server_tokens_find(const server_tokens *t, const char *token, size_t len);

/* server_auth_bearer finds TOKEN in an authorization value "Bearer TOKEN" (the
 * scheme in any case, then spaces, then one word of visible ASCII):
 * true with *tok and *toklen set, false for anything else. */
bool server_auth_bearer(const char *val, size_t len, const char **tok,
                        size_t *toklen);

/* What a role may do with a method. AUTH_JOIN: an Init that declares
 * nothing new — the model the server holds, with the same spec hash —
 * which the method checks once it has read the request. */
typedef enum { AUTH_DENY, AUTH_ALLOW, AUTH_JOIN } auth_right;

/* server_auth_needs_token tells whether a call of path needs a token on a
 * server with --auth-tokens: every call except the grpc.health.v1.Health
 * service. */
bool server_auth_needs_token(const char *path);

/* server_auth_may returns what role may do with the method at path. Unknown
 * paths are allowed to every role: the server answers them UNIMPLEMENTED. */
auth_right server_auth_may(auth_role role, const char *path);

/* server_auth_role_name returns "reader", "worker", "admin" or "open". */
const char *server_auth_role_name(auth_role role);

/* server_auth_role_rights returns the methods role may call, for messages:
 * "Pull and Status". */
const char *server_auth_role_rights(auth_role role);

/* server_auth_method_name returns the part of path after its last '/'. */
const char *server_auth_method_name(const char *path);

#endif
