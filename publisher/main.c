/* sayin-publisher: publishes voice posts into the store (the only writer).
 * This file only dispatches: each command lives in cmd/. */
#include "cmd/cmd.h"
#include "core/version.h"
#include "deliver/net.h"
#include "media/media.h"
#include "render/compress.h"
#include "render/page.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static int cmd_help(int argc, char **argv);

static const struct command {
	const char *name;
	const char *summary; /* the line in the usage text */
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "post", "publish a recording as a voice post", cmd_post },
	{ "author", "add authors, issue and revoke API tokens, list them", cmd_author },
	{ "serve", "run the ingest API (and the delivery worker)", cmd_serve },
	{ "push", "deliver due outbox jobs (CDN purges, pushes) once", cmd_push },
	{ "status", "the outbox: depth, oldest job, parked jobs", cmd_status },
	{ "retry", "make parked jobs due again", cmd_retry },
	{ "crosspost", "post due cross-posts to X and Facebook once (cron)", cmd_crosspost },
	{ "settings", "print every setting as a Markdown table", cmd_settings },
	{ "site", "record, change or show the site's settings kept in the store", cmd_site },
	{ "rebuild", "re-render every feed and page after `site set` (rebuild --all)", cmd_rebuild },
	{ "migrate", "bring the store up to this program's format", cmd_migrate },
	{ "config", "check the configuration (config check) or show it (config show)", cmd_config },
	{ "backup", "write a verified snapshot of the live store (and send it to S3)", cmd_backup },
	{ "restore", "install a snapshot as the store (never over one in use)", cmd_restore },
	{ "s3", "compare the S3 bucket with the store (s3 verify), fix it (--repair)", cmd_s3 },
	{ "fsck", "check every post's objects, names, index entries and references", cmd_fsck },
	{ "help", "this text", cmd_help },
};
#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

/* --version: the build, the store format, then every linked library as
 * the module that owns it reports it. */
static int print_version(void)
{
	char buf[1024];

	version_print(stdout, "sayin-publisher");
	fputs(net_library_versions(buf, sizeof(buf)), stdout);
	printf("jansson %s\n", jansson_version_str());
	fputs(media_library_versions(buf, sizeof(buf)), stdout);
	fputs(compress_library_versions(buf, sizeof(buf)), stdout);
	fputs(card_library_versions(buf, sizeof(buf)), stdout);
	return EXIT_OK;
}

static void usage(FILE *out)
{
	fprintf(out, "Usage: sayin-publisher COMMAND [options]\n\nCommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(out, "\nRun 'sayin-publisher COMMAND --help' for a command's options;\n"
	             "'sayin-publisher --version' for the versions of the build and its libraries.\n");
}

static int cmd_help(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	usage(stdout);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const char *name;

	/* The decoder child (see media_transcode_file): before anything else. */
	if (argc >= 2 && strcmp(argv[1], MEDIA_DECODER_COMMAND) == 0)
		return media_decoder_main(argc, argv);
	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	name = argv[1];
	if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
		name = "help";
	if (strcmp(name, "--version") == 0)
		return print_version();
	for (size_t i = 0; i < N_COMMANDS; i++) {
		if (strcmp(name, commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	}
	fprintf(stderr, "sayin-publisher: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
