/* cmd migrate: brings the store up to this program's format, in one transaction. */
#include "cmd/cmd.h"

#include "core/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const migrate_settings[] = { "data", "map-size", "log-level", NULL };

static const cmd_spec migrate_spec = {
	.name = "migrate",
	.usage = "Usage: sayin-publisher migrate [options]\n\n"
	         "Brings the store written by an older sayin up to this program's format\n"
	         "in one transaction (nothing changes if it fails); every other command,\n"
	         "the API and the origin refuse an older store until then. Stop serve\n"
	         "and the origin first, and take a backup. A store already at this\n"
	         "format is left as it is. Exit codes: 0 migrated or current, 1 failed,\n"
	         "2 usage or a store of a newer format.\n",
	.settings = migrate_settings,
};

int cmd_migrate(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	unsigned from = 0;
	char path[4096];
	int rc, code = cmd_load_config(&migrate_spec, argc, argv, &cfg);

	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (config_positional_count(cfg) != 0) {
		cmd_usage(stderr, &migrate_spec);
		goto done;
	}
	/* Migrating nothing would create an empty store: refuse a wrong --data. */
	snprintf(path, sizeof(path), "%s/data.mdb", config_get(cfg, "data"));
	if (access(path, F_OK) != 0) {
		fprintf(stderr, "sayin-publisher migrate: no store at %s (%s)\n",
		        config_get(cfg, "data"), strerror(errno));
		code = EXIT_FAIL;
		goto done;
	}
	code = cmd_open_store_format(cfg, "migrate", 1, &st);
	if (code >= 0)
		goto done;
	rc = store_migrate(st, &from);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher migrate: %s: %s\n", config_get(cfg, "data"),
		        sayin_strerror(rc));
		code = rc == SAYIN_ESTORENEWER ? EXIT_USAGE : cmd_store_exit(rc);
		goto done;
	}
	if (from == STORE_FORMAT_VERSION)
		printf("store %s is at format %u already: nothing to do\n", config_get(cfg, "data"),
		       from);
	else
		printf("store %s migrated from format %u to %u\n", config_get(cfg, "data"), from,
		       STORE_FORMAT_VERSION);
	code = EXIT_OK;
done:
	store_close(st);
	config_free(cfg);
	return code;
}
