/* version: what `--version` prints for both programs: the build's version
 * (git describe at build time), the store format it reads and writes, and
 * the versions of the libraries the core links, each as reported by the
 * module that owns the library. The publisher adds its own libraries'
 * lines after these. */
#ifndef SAYIN_VERSION_H
#define SAYIN_VERSION_H

#include <stdio.h>

/* The build's version: `git describe --always --dirty` when built from a
 * git checkout, else the VERSION file's, else "unknown". */
const char *version_string(void);

/* Prints "PROGRAM VERSION", "store-format N" and one "LIBRARY VERSION" line
 * per core library (libuv, llhttp, LMDB, OpenSSL) to out. */
void version_print(FILE *out, const char *program);

#endif
