/* cmd retry: makes parked outbox jobs due again. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "deliver/outbox.h"

#include <stdio.h>

static const config_arg retry_args[] = {
	{ "all", NULL, "retry every parked job", 1 },
};

static const cmd_spec retry_spec = {
	.name = "retry",
	.usage = "Usage: sayin-publisher retry JOB-ID | --all [options]\n\n"
	         "Makes parked jobs due again with their attempts reset (push or serve\n"
	         "delivers them).\n\n",
	.args = retry_args,
	.nargs = 1,
	.settings = cmd_outbox_settings,
};

int cmd_retry(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	unsigned n = 0;
	const char *id;
	int code, rc;

	code = cmd_load_config(&retry_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	id = config_positional_count(cfg) == 1 ? config_positional(cfg, 0) : NULL;
	if ((id == NULL) == (config_get(cfg, "all") == NULL)) {
		cmd_usage(stderr, &retry_spec);
		goto done;
	}
	code = cmd_open_store(cfg, "retry", &st);
	if (code >= 0)
		goto done;
	rc = outbox_retry(st, id, clock_now_ms(), &n);
	if (rc == SAYIN_ENOTFOUND)
		fprintf(stderr, "sayin-publisher retry: no job %s\n", id);
	else if (rc != 0)
		fprintf(stderr, "sayin-publisher retry: %s\n", sayin_strerror(rc));
	else
		printf("%u job%s made due again\n", n, n == 1 ? "" : "s");
	code = rc == 0 ? EXIT_OK : EXIT_FAIL;
done:
	store_close(st);
	config_free(cfg);
	return code;
}
