/* version: the --version text shared by both programs. */
#include "core/version.h"

#include "core/http.h"
#include "core/store.h"

#include <openssl/crypto.h>

/* The Makefile defines SAYIN_VERSION for this file only, so a new commit
 * rebuilds one object. */
#ifndef SAYIN_VERSION
#define SAYIN_VERSION "unknown"
#endif

const char *version_string(void)
{
	return SAYIN_VERSION;
}

void version_print(FILE *out, const char *program)
{
	char libs[256];

	fprintf(out, "%s %s\n", program, version_string());
	fprintf(out, "store-format %u\n", (unsigned)STORE_FORMAT_VERSION);
	fputs(http_library_versions(libs, sizeof(libs)), out);
	fprintf(out, "lmdb %s\n", store_lmdb_version());
	fprintf(out, "openssl %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
}
