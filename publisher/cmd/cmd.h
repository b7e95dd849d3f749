/* cmd: the commands of sayin-publisher, one file each, and the few things
 * they share: exit codes, usage text, loading a command's settings and
 * opening the store. main.c holds the table that dispatches to them.
 *
 * Contract of a command: cmd_NAME(argc, argv) gets argv[0] = the command's
 * name and the arguments after it; it prints its own result on stdout and
 * its errors on stderr (one line, "sayin-publisher NAME: ..."), and returns
 * an exit code below. It frees everything it made before returning.
 *
 * Threading: the main thread, once per process. */
#ifndef SAYIN_CMD_H
#define SAYIN_CMD_H

#include "core/config.h"
#include "core/store.h"
#include "pipeline.h"

#include <stddef.h>
#include <stdio.h>

/* Exit codes, documented in publisher/README.md. */
enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2, EXIT_BAD_INPUT = 3, EXIT_STORE_FULL = 4,
       EXIT_REFUSED = 5 /* restore: the store is in use, or the directory holds one */ };

/* What a command's --help prints and what its config_load accepts. */
typedef struct cmd_spec {
	const char *name;              /* "post": the word after sayin-publisher */
	const char *usage;             /* the text printed before the options */
	const config_arg *args;        /* the command's own arguments (NULL: none) */
	size_t nargs;
	const char *const *settings;   /* the settings it reads, NULL-terminated */
} cmd_spec;

/* The settings of the commands that work the outbox (push, status, retry). */
extern const char *const cmd_outbox_settings[];

/* Prints spec's usage text, then its arguments and settings. */
void cmd_usage(FILE *out, const cmd_spec *spec);

/* Loads the command's config into *cfg and sets the log level. Returns -1
 * when the command should go on; else the exit code to return at once:
 * EXIT_OK after printing usage on --help (*cfg is then NULL), EXIT_USAGE
 * after printing the bad flag or setting. *cfg is the caller's to free
 * (config_free accepts NULL). */
int cmd_load_config(const cmd_spec *spec, int argc, char **argv, config **cfg);

/* Opens the store named by --data with --map-size. Returns -1 and *st (the
 * caller's: store_close), or the exit code after printing why: EXIT_USAGE
 * (a bad map-size, or a store of another format: see store_open),
 * EXIT_FAIL (the store cannot be opened). */
int cmd_open_store(const config *cfg, const char *name, store **st);
/* The same; any_format opens an older store too (migrate). */
int cmd_open_store_format(const config *cfg, const char *name, int any_format, store **st);

/* Makes cfg agree with the site recorded in st (site_apply). -1 to go on,
 * or the exit code after printing why: EXIT_USAGE (the configuration
 * disagrees with the store), EXIT_FAIL. */
int cmd_apply_site(store *st, config *cfg, const char *name);

/* A command's own settings, read after the pipeline's: 0, or nonzero with
 * err naming the bad value. */
typedef int (*cmd_settings_fn)(const config *cfg, const pipeline *pipe, void *arg, char *err,
                               size_t errlen);

/* The start every command that publishes or delivers shares, in this
 * order: the store, its site settings into cfg (cmd_apply_site), the
 * pipeline's settings into *pipe, then the command's own (more; may be
 * NULL). Returns -1 to go on (*st open); else the exit code after printing
 * why: EXIT_USAGE for a bad setting or one the store's site disagrees
 * with, or one of cmd_open_store. *pipe is the caller's to free
 * (pipeline_free) either way, *st to close. */
int cmd_prepare(const cmd_spec *spec, config *cfg, pipeline *pipe, cmd_settings_fn more,
                void *arg, store **st);

/* Logs a warning when the public URL is http:// on a host that is not
 * loopback. */
void cmd_warn_public_url(const pipeline *pipe);

/* The exit code for an error of a store write: EXIT_OK for 0,
 * EXIT_STORE_FULL when the map or disk is full, else EXIT_FAIL. */
int cmd_store_exit(int rc);

int cmd_post(int argc, char **argv);
int cmd_author(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_push(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_retry(int argc, char **argv);
int cmd_crosspost(int argc, char **argv);
int cmd_settings(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_fsck(int argc, char **argv);
int cmd_site(int argc, char **argv);
int cmd_rebuild(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_config(int argc, char **argv);
int cmd_s3(int argc, char **argv);

#endif
