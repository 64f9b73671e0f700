/* The version of the library itself, as opposed to the headers a program was compiled with. */
#include "core/version.h"

const char *gale_version_string(void) { return GALE_VERSION_STRING; }

unsigned gale_version(void) { return GALE_VERSION_HEX; }
