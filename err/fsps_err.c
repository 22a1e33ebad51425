/* fsps_err.c: the descriptions and names of the fsps_err codes, generated
 * from the one list in fsps_err.h. */
#include "fsps_err.h"

const char *fsps_strerror(int err) {
  switch (err) {
#define FSPS_ERR_CASE(name, value, desc)                                       \
  case value:                                                                  \
    return desc;
    FSPS_ERR_MAP(FSPS_ERR_CASE)
#undef FSPS_ERR_CASE
  }
  return "unrecognised error code";
}

const char *fsps_err_name(int err) {
  switch (err) {
#define FSPS_ERR_NAME(name, value, desc)                                       \
  case value:                                                                  \
    return #name;
    FSPS_ERR_MAP(FSPS_ERR_NAME)
#undef FSPS_ERR_NAME
  }
  return "?";
}
