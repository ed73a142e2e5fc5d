#ifndef STORM_CHIREDIS_SHIM_H
#define STORM_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>

/// hiredis 0.14 exposes its version only as macros; Swift imports integer macros, but keep one spelling.
static inline const char *storm_hiredis_version(void) {
#define STORM_STR2(x) #x
#define STORM_STR(x) STORM_STR2(x)
    return STORM_STR(HIREDIS_MAJOR) "." STORM_STR(HIREDIS_MINOR) "." STORM_STR(HIREDIS_PATCH);
}
#endif
