// SwiftPM builds a C target only with a source file; the interfaces are all in the header.
#include "CStormLinux.h"
