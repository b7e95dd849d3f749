/* fuzz_config: the settings reader (origin/core/config.c) through its
 * public API: an INI file (libinih with our handler), command-line flags
 * over it, and the typed reads (sizes with K/M/G/T, numbers); then every
 * CDN driver's configure (deliver/cdn), which parses the settings it reads
 * (edge lists, ids, credentials, on/off).
 *
 * Input: the INI file up to the first NUL, then command-line arguments
 * separated by NULs. The file is a memfd handed over as --config
 * /proc/self/fd/N, so config_load opens it as it opens any path. */
#include "core/config.h"
#include "core/log.h"
#include "deliver/cdn/cdn.h"
#include "memfd.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARGS_MAX 16

static const config_arg args[] = {
	{ "author", "HANDLE", "an argument with a value", 0 },
	{ "dry-run", NULL, "a switch", 1 },
};

static const char *const sizes[] = { "map-size", "max-input-bytes", "decode-memory" };
static const char *const numbers[] = { "threads", "max-header-bytes", "max-headers", "max-uri",
	                               "idle-timeout-ms", "name-max-age", "bitrate",
	                               "max-duration", "feed-items", "outbox-max-attempts" };

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	log_set_level(LOG_ERROR);
	unsetenv("SAYIN_CONFIG"); /* the file is the input's, not the environment's */
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t ini_len = nul ? (size_t)(nul - data) : size;
	char *argv[ARGS_MAX + 4], path[64], *rest = NULL, err[512] = "";
	int argc = 0, fd, rc;
	config *cfg = NULL;

	fd = fuzz_memfd(data, ini_len);
	if (fd < 0)
		return 0;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	argv[argc++] = "fuzz";
	argv[argc++] = "--config";
	argv[argc++] = path;
	if (nul != NULL) {
		size_t rest_len = size - ini_len - 1;
		rest = malloc(rest_len + 1);
		if (rest == NULL) {
			close(fd);
			return 0;
		}
		memcpy(rest, nul + 1, rest_len);
		rest[rest_len] = '\0';
		for (char *p = rest; p < rest + rest_len + 1 && argc < ARGS_MAX + 3;) {
			argv[argc++] = p;
			p += strlen(p) + 1;
		}
	}
	argv[argc] = NULL;

	rc = config_load(argc, argv, args, sizeof(args) / sizeof(args[0]), &cfg, err, sizeof(err));
	if (rc != 0 && rc != 1 && err[0] == '\0')
		abort(); /* a refusal names its cause */
	if (rc == 0 || rc == 1) {
		uint64_t v;
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
			config_get_size(cfg, sizes[i], 0, UINT64_MAX, &v, err, sizeof(err));
		for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++)
			config_get_u64(cfg, numbers[i], 1, 1000000, &v, err, sizeof(err));
		for (size_t i = 0; i < config_positional_count(cfg); i++) {
			if (config_positional(cfg, i) == NULL)
				abort();
		}
		config_get(cfg, "author");
		config_get(cfg, "dry-run");
		for (size_t i = 0; cdn_drivers[i] != NULL; i++) {
			void *state = NULL;
			if (cdn_drivers[i]->configure(cfg, &state, err, sizeof(err)) == 0)
				cdn_drivers[i]->destroy(state);
		}
		config_free(cfg);
	}
	free(rest);
	close(fd);
	return 0;
}
