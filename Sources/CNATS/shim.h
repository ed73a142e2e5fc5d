#ifndef STORM_CNATS_SHIM_H
#define STORM_CNATS_SHIM_H
#include <nats/nats.h>
#endif
