#ifndef STORM_CLIBPQ_SHIM_H
#define STORM_CLIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
