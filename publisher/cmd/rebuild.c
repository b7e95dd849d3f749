/* cmd rebuild: re-renders every feed and page of the site (after site set). */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "pipeline.h"
#include "publish.h"

#include <stdio.h>

static const config_arg rebuild_args[] = {
	{ "all", NULL, "every author's feeds, pages and post pages, and /authors.json", 1 },
};

static const cmd_spec rebuild_spec = {
	.name = "rebuild",
	.usage = "Usage: sayin-publisher rebuild --all [options]\n\n"
	         "Re-renders every document of the site from the stored records, with the\n"
	         "site's settings as the store records them (site show): every author's\n"
	         "head feed, archive pages and author page, every post's page and embed,\n"
	         "and /authors.json, one transaction per author; each enqueues the CDN\n"
	         "purges of what it wrote (push or serve delivers them). Run it after\n"
	         "`site set`. Audio and share cards are immutable and stay as they are.\n"
	         "Exit codes: 0 rebuilt, 1 failed (run it again), 2 usage, 4 store full.\n",
	.args = rebuild_args,
	.nargs = sizeof(rebuild_args) / sizeof(rebuild_args[0]),
	.settings = cmd_outbox_settings,
};

int cmd_rebuild(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	size_t authors = 0, posts = 0;
	char err[512];
	int rc, code = cmd_load_config(&rebuild_spec, argc, argv, &cfg);

	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	if (config_get(cfg, "all") == NULL || config_positional_count(cfg) != 0) {
		cmd_usage(stderr, &rebuild_spec);
		goto done;
	}
	code = cmd_prepare(&rebuild_spec, cfg, &pipe, NULL, NULL, &st);
	if (code >= 0)
		goto done;
	rc = publish_rebuild_all(st, &pipe.publish, clock_now_ms(), &authors, &posts, err,
	                         sizeof(err));
	if (rc != 0)
		fprintf(stderr, "sayin-publisher rebuild: %s\n", err);
	else
		printf("rebuilt %zu authors, %zu posts with public URL %s\n", authors, posts,
		       pipe.base_url);
	code = cmd_store_exit(rc);
done:
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}
