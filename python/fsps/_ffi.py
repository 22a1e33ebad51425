"""The C declarations of libfsps (fsps.h, fsps_err.h) for cffi's ABI mode,
and the loading of libfsps.so.

cffi reads these declarations instead of the header (it has no
preprocessor); they must stay identical to fsps.h, which the test
``test_cdef_matches_header`` checks. Only public ``fsps_*`` symbols are used.
"""
import os

import cffi

from ._version import __version__

CDEF = """
const char *fsps_version(void);
const char *fsps_strerror(int err);
const char *fsps_err_name(int err);

typedef struct fsps_spec fsps_spec;
fsps_spec *fsps_spec_create(uint64_t seed);
void fsps_spec_destroy(fsps_spec *spec);
int fsps_spec_add_layer(fsps_spec *spec, const char *name);
int fsps_spec_add_tensor(fsps_spec *spec, const char *name, uint32_t ndims,
                         const uint64_t *dims, const char *init, double a,
                         double b);
int fsps_spec_set_optimizer(fsps_spec *spec, const char *name, double lr);
int fsps_spec_set_param(fsps_spec *spec, const char *key, double value);
int fsps_spec_set_schedule(fsps_spec *spec, const char *name);
int fsps_spec_set_wire_dtype(fsps_spec *spec, const char *dtype);
const char *fsps_spec_wire_dtype(const fsps_spec *spec);
int fsps_spec_validate(const fsps_spec *spec, char *msg, size_t msglen);
uint32_t fsps_spec_num_layers(const fsps_spec *spec);
uint64_t fsps_spec_layer_size(const fsps_spec *spec, uint32_t layer);
uint64_t fsps_spec_hash(const fsps_spec *spec);
fsps_spec *fsps_spec_decode(const void *bytes, size_t len, char *err,
                            size_t errlen);

typedef enum { FSPS_BSP = 0, FSPS_SSP = 1, FSPS_ASP = 2 } fsps_mode;
typedef enum {
  FSPS_WIRE_AS_SPEC = 0,
  FSPS_WIRE_FP32 = 1,
  FSPS_WIRE_BF16 = 2,
} fsps_wire_dtype;
typedef struct {
  uint32_t size;
  const char *servers;
  uint32_t rank;
  uint32_t world;
  fsps_mode mode;
  uint32_t staleness;
  uint32_t prefetch;
  bool reshard_after_forward;
  int64_t timeout_ms;
  uint32_t retries;
  uint32_t io_threads;
  const char *token;
  const char *tls_ca;
  const char *tls_cert;
  const char *tls_key;
  const char *tls_server_name;
  fsps_wire_dtype wire_dtype;
} fsps_options;
typedef struct fsps_client fsps_client;

int fsps_token_load(const char *path, char *out, size_t outlen, char *err,
                    size_t errlen);

void fsps_options_init(fsps_options *o);
void fsps_options_init_size(fsps_options *o, size_t size);
int fsps_connect(const fsps_options *o, fsps_client **out, char *err,
                 size_t errlen);
void fsps_close(fsps_client *c);
const char *fsps_last_error(const fsps_client *c);
int fsps_tune_malloc(void);
int fsps_declare(fsps_client *c, const fsps_spec *spec);
int fsps_attach(fsps_client *c, const fsps_spec *spec, int64_t timeout_ms);
int fsps_layer_version(fsps_client *c, uint32_t layer, uint64_t *version);
int fsps_recover(fsps_client *c, uint64_t *step);
int fsps_set_values(fsps_client *c, uint32_t layer, const float *values);
int fsps_gather(fsps_client *c, uint32_t layer, uint64_t min_version,
                float *dst, uint64_t *version);
int fsps_gather_range(fsps_client *c, uint32_t layer, uint64_t min_version,
                      uint64_t offset, uint64_t count, float *dst,
                      uint64_t *version);
int fsps_push(fsps_client *c, uint32_t layer, uint64_t step, const float *grad);
int fsps_push_wait(fsps_client *c);
int fsps_step_begin(fsps_client *c, uint64_t step);
int fsps_forward(fsps_client *c, uint32_t layer, const float **params);
int fsps_forward_done(fsps_client *c, uint32_t layer);
int fsps_backward(fsps_client *c, uint32_t layer, const float **params,
                  float **grad);
int fsps_backward_inplace(fsps_client *c, uint32_t layer, float **buf);
int fsps_backward_done(fsps_client *c, uint32_t layer);
int fsps_set_pieces(fsps_client *c, uint32_t layer, uint32_t npieces,
                    const uint64_t *bounds);
uint32_t fsps_num_pieces(const fsps_client *c, uint32_t layer);
int fsps_forward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                       const float **params);
int fsps_forward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece);
int fsps_backward_piece(fsps_client *c, uint32_t layer, uint32_t piece,
                        float **buf);
int fsps_backward_piece_done(fsps_client *c, uint32_t layer, uint32_t piece);
int fsps_step_end(fsps_client *c);
uint32_t fsps_num_servers(const fsps_client *c);
typedef struct fsps_status fsps_status;
int fsps_status_get(fsps_client *c, fsps_status **out);
void fsps_status_free(fsps_status *st);
uint32_t fsps_status_num_servers(const fsps_status *st);
const char *fsps_status_address(const fsps_status *st, uint32_t s);
int fsps_status_error(const fsps_status *st, uint32_t s, const char **msg);
bool fsps_status_initialized(const fsps_status *st, uint32_t s);
uint32_t fsps_status_server_index(const fsps_status *st, uint32_t s);
uint32_t fsps_status_server_count(const fsps_status *st, uint32_t s);
uint32_t fsps_status_num_workers(const fsps_status *st, uint32_t s);
const char *fsps_status_mode(const fsps_status *st, uint32_t s);
uint64_t fsps_status_spec_hash(const fsps_status *st, uint32_t s);
uint64_t fsps_status_incarnation(const fsps_status *st, uint32_t s);
uint64_t fsps_status_epoch(const fsps_status *st, uint32_t s);
uint32_t fsps_status_checkpoints(const fsps_status *st, uint32_t s,
                                 const uint64_t **versions);
const void *fsps_status_model_spec(const fsps_status *st, uint32_t s,
                                   size_t *len);
uint32_t fsps_status_num_layers(const fsps_status *st, uint32_t s);
const char *fsps_status_layer_name(const fsps_status *st, uint32_t s,
                                   uint32_t l);
uint64_t fsps_status_layer_size(const fsps_status *st, uint32_t s, uint32_t l);
uint64_t fsps_status_layer_slice_count(const fsps_status *st, uint32_t s,
                                       uint32_t l);
uint64_t fsps_status_layer_version(const fsps_status *st, uint32_t s,
                                   uint32_t l);
uint64_t fsps_status_layer_pending_step(const fsps_status *st, uint32_t s,
                                        uint32_t l);
bool fsps_status_layer_awaiting_values(const fsps_status *st, uint32_t s,
                                       uint32_t l);
uint32_t fsps_status_layer_pushed(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers);
uint32_t fsps_status_layer_missing(const fsps_status *st, uint32_t s,
                                   uint32_t l, const uint32_t **workers);
uint32_t fsps_status_layer_absent(const fsps_status *st, uint32_t s,
                                  uint32_t l, const uint32_t **workers);
int fsps_checkpoint(fsps_client *c, uint32_t s, char *path, size_t pathlen,
                    uint64_t *min_version, uint64_t *bytes);
int fsps_rollback(fsps_client *c, uint64_t version, uint64_t *epoch);
double fsps_wait_seconds(const fsps_client *c);
uint64_t fsps_peak_buffer_bytes(const fsps_client *c);
void fsps_bytes_moved(const fsps_client *c, uint64_t *gathered,
                      uint64_t *pushed);
"""

ffi = cffi.FFI()
ffi.cdef(CDEF)

_MAJOR = __version__.split(".")[0]


def _candidates():
    """Where libfsps.so may be, most explicit first: $FSPS_LIBRARY, the
    path `cmake --install` wrote beside this package, then the system's
    loader path (ldconfig, LD_LIBRARY_PATH)."""
    env = os.environ.get("FSPS_LIBRARY")
    if env:
        return [env]
    found = []
    try:
        from ._libpath import LIBRARY
        found.append(LIBRARY)
    except ImportError:
        pass
    found.append("libfsps.so." + _MAJOR)
    return found


def _load():
    tried = []
    for path in _candidates():
        try:
            return ffi.dlopen(path), path
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    raise ImportError(
        "fsps: cannot load libfsps.so.%s; tried: %s. Build and install "
        "fsps (`cmake --install build`), or set FSPS_LIBRARY to the path of "
        "libfsps.so.%s." % (_MAJOR, "; ".join(tried), _MAJOR))


lib, LIBRARY_PATH = _load()

_lib_version = ffi.string(lib.fsps_version()).decode()
if _lib_version.split(".")[0] != _MAJOR:
    raise ImportError(
        "fsps: %s is version %s, this package needs major version %s"
        % (LIBRARY_PATH, _lib_version, _MAJOR))
