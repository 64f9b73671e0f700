/* gale's version, for the preprocessor and at run time.
 *
 * The three numbers follow semantic versioning: MINOR grows with additions, MAJOR with changes
 * that break programs built against an earlier release (while MAJOR is 0, a MINOR step may). The
 * build reads its project version from this file, so it is the one place the version is written.
 */
#ifndef GALE_CORE_VERSION_H
#define GALE_CORE_VERSION_H

#define GALE_VERSION_MAJOR 0
#define GALE_VERSION_MINOR 2
#define GALE_VERSION_PATCH 0

#define GALE_VERSION_STRINGIFY_(x) #x
#define GALE_VERSION_STRINGIFY(x) GALE_VERSION_STRINGIFY_(x)
/* "0.2.0": the version of the headers a program was compiled against. */
#define GALE_VERSION_STRING                                                                        \
    GALE_VERSION_STRINGIFY(GALE_VERSION_MAJOR)                                                     \
    "." GALE_VERSION_STRINGIFY(GALE_VERSION_MINOR) "." GALE_VERSION_STRINGIFY(GALE_VERSION_PATCH)
/* One number that orders versions: 0x000200 for 0.2.0. */
#define GALE_VERSION_HEX                                                                           \
    ((GALE_VERSION_MAJOR << 16) | (GALE_VERSION_MINOR << 8) | GALE_VERSION_PATCH)

/* Returns the version of the library the program runs with, as "MAJOR.MINOR.PATCH" (it can differ
 * from GALE_VERSION_STRING when a shared library was updated). Ownership: a static string. */
const char *gale_version_string(void);

/* Returns GALE_VERSION_HEX of the library the program runs with. */
unsigned gale_version(void);

#endif
