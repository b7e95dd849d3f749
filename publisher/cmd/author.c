/* cmd author: adds, edits and removes authors, issues and revokes API
 * tokens, rebuilds and lists. */
#include "cmd/cmd.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/jsonstore.h"
#include "deliver/crosspost.h"
#include "render/record.h"
#include "ingest/auth.h"
#include "pipeline.h"
#include "publish.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const config_arg author_args[] = {
	{ "name", "NAME", "display name (author add, author edit)", 0 },
	{ "bio", "TEXT", "a short description, at most 300 characters; \"\" removes it (author edit)",
	  0 },
};

static const char *const author_settings[] = {
	"data", "map-size", "public-url", "listen", "feed-items", "feed-page-items", "varnish-edges",
	"nginx-edges", "fastly-service-id", "cloudflare-zone-id", "cloudfront-distribution-id",
	"s3-bucket", "log-level", NULL
};

static const cmd_spec author_spec = {
	.name = "author",
	.usage = "Usage: sayin-publisher author add HANDLE --name \"Display Name\"\n"
	         "       sayin-publisher author token HANDLE\n"
	         "       sayin-publisher author revoke HANDLE [TOKEN-ID]\n"
	         "       sayin-publisher author rebuild HANDLE\n"
	         "       sayin-publisher author edit HANDLE [--name NAME] [--bio TEXT]\n"
	         "       sayin-publisher author remove HANDLE\n"
	         "       sayin-publisher author list\n\n"
	         "add creates an author (its empty feed, author page and /authors.json) and\n"
	         "prints a new API token once; token issues another; revoke removes one\n"
	         "token, or all of the author's; rebuild rewrites the author's feed, every\n"
	         "archive page and the author page (after changing feed-items,\n"
	         "feed-page-items or public-url); list prints authors, their post counts\n"
	         "and token ids. Tokens are stored only as hashes: a lost token cannot be\n"
	         "shown again, only revoked and replaced.\n\n"
	         "edit changes the name and the bio (shown on the author page and as the\n"
	         "feed's description) and re-renders every document of the author.\n"
	         "remove deletes every post (as post delete does), the feeds, the author\n"
	         "page and the author, revokes every token, and leaves tombstones: the\n"
	         "origin answers 410 Gone for /u/HANDLE/... and each /p/ID. It prints the\n"
	         "cross-posts already made (not undone). A removed handle cannot be added\n"
	         "again. Both enqueue the CDN purges of what they changed.\n\n",
	.args = author_args,
	.nargs = sizeof(author_args) / sizeof(author_args[0]),
	.settings = author_settings,
};

/* Prints a new token of handle (a write transaction of its own). */
static int issue_token(store *st, const char *handle)
{
	char token[AUTH_TOKEN_LEN + 1];
	auth_token_info info;
	store_txn *txn;
	int rc = store_txn_begin(st, 1, &txn);

	if (rc == 0) {
		rc = auth_token_issue(txn, handle, clock_now_ms(), token, &info);
		if (rc == 0)
			rc = store_txn_commit(txn);
		else
			store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		fprintf(stderr, "sayin-publisher author: no author '%s'\n", handle);
		return EXIT_FAIL;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher author: cannot issue a token: %s\n",
		        sayin_strerror(rc));
		return cmd_store_exit(rc);
	}
	printf("token %s for %s (shown once; id %s)\n%s\n", info.id, handle, info.id, token);
	return EXIT_OK;
}

/* Revokes one token of handle (id) or all of them (id NULL). */
static int revoke_tokens(store *st, const char *handle, const char *id)
{
	store_txn *txn;
	unsigned n = 0;
	int rc = store_txn_begin(st, 1, &txn);

	if (rc == 0) {
		rc = auth_token_revoke(txn, handle, id, &n);
		if (rc == 0)
			rc = store_txn_commit(txn);
		else
			store_txn_abort(txn);
	}
	if (rc == SAYIN_ENOTFOUND) {
		fprintf(stderr, "sayin-publisher author revoke: %s has no token %s\n", handle,
		        id ? id : "");
		return EXIT_FAIL;
	}
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher author revoke: %s\n", sayin_strerror(rc));
		return EXIT_FAIL;
	}
	printf("revoked %u token%s of %s\n", n, n == 1 ? "" : "s", handle);
	return EXIT_OK;
}

struct list_ctx {
	store_txn *txn;
};

static int print_token(void *arg, const auth_token_info *info)
{
	(void)arg;
	printf("  token %s  created %lld\n", info->id, (long long)(info->created_ms / 1000));
	return 0;
}

static int print_author(void *arg, const char *key, const void *record, size_t len)
{
	struct list_ctx *c = arg;
	json_t *j = NULL;
	size_t count = 0;
	record_author v = { 0 };

	if (jsonstore_parse(record, len, &j) == 0)
		record_author_read(j, &v);
	store_author_post_count(c->txn, key, &count);
	printf("%s\t%s\t%zu posts\n", key, v.name ? v.name : "?", count);
	json_decref(j);
	return auth_token_each(c->txn, key, print_token, NULL);
}

static int list_authors(store *st)
{
	struct list_ctx c = { 0 };
	int rc = store_txn_begin(st, 0, &c.txn);

	if (rc == 0) {
		rc = store_each_record(c.txn, STORE_AUTHORS, "", print_author, &c);
		store_txn_abort(c.txn);
	}
	if (rc != 0)
		fprintf(stderr, "sayin-publisher author list: %s\n", sayin_strerror(rc));
	return rc == 0 ? EXIT_OK : EXIT_FAIL;
}

/* author edit HANDLE [--name] [--bio] */
static int edit_author(store *st, pipeline *pipe, const char *handle, const char *name,
                       const char *bio)
{
	char err[512];
	size_t posts = 0;
	int rc;

	if (name == NULL && bio == NULL) {
		fprintf(stderr, "sayin-publisher author edit: give --name NAME, --bio TEXT or both\n");
		return EXIT_USAGE;
	}
	rc = publish_author_edit(st, &pipe->publish, handle, name, bio, clock_now_ms(), &posts, err,
	                         sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher author edit: %s\n", err);
		return rc == SAYIN_EINVAL ? EXIT_USAGE : cmd_store_exit(rc);
	}
	printf("edited %s: feeds, author page and %zu post pages rewritten\n", handle, posts);
	return EXIT_OK;
}

struct removal {
	const char *handle;
	unsigned tokens;
	json_t *ids;        /* the author's post ids, as an object's keys */
	size_t crossposts;
};

static int collect_id(void *arg, const char *id, uint64_t seq, const void *record, size_t len)
{
	(void)seq;
	(void)record;
	(void)len;
	return json_object_set_new(((struct removal *)arg)->ids, id, json_true()) == 0 ? 0
	                                                                              : -ENOMEM;
}

static int print_own_crosspost(void *arg, const char *post_id, const crosspost_done *done)
{
	struct removal *r = arg;
	if (json_object_get(r->ids, post_id) == NULL)
		return 0;
	if (r->crossposts++ == 0)
		printf("cross-posts already made (not undone; remove them on the network):\n");
	printf("  %s  %-8s %s\n", post_id, done->network ? done->network : "?",
	       done->remote_url ? done->remote_url : done->remote_id ? done->remote_id : "");
	return 0;
}

/* Runs inside the removal's transaction. */
static int revoke_all(void *arg, store_txn *txn)
{
	struct removal *r = arg;
	return auth_token_revoke(txn, r->handle, NULL, &r->tokens);
}

/* author remove HANDLE */
static int remove_author(store *st, pipeline *pipe, const char *handle)
{
	struct removal r = { .handle = handle, .ids = json_object() };
	publish_removed out;
	store_txn *txn;
	char err[512];
	int rc = r.ids == NULL ? -ENOMEM : store_txn_begin(st, 0, &txn);

	/* The cross-posts are read before the posts go (their records stay). */
	if (rc == 0) {
		rc = store_author_posts(txn, handle, 0, collect_id, &r);
		store_txn_abort(txn);
	}
	if (rc == 0)
		rc = publish_author_remove(st, &pipe->publish, handle, clock_now_ms(), revoke_all, &r,
		                           &out, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "cannot read the author's posts: %s", sayin_strerror(rc));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher author remove: %s\n", err);
		json_decref(r.ids);
		return cmd_store_exit(rc);
	}
	printf("removed author %s: %zu posts, %u objects deleted, %u shared kept, %u token%s "
	       "revoked\n", handle, out.posts, out.objects_deleted, out.objects_kept, r.tokens,
	       r.tokens == 1 ? "" : "s");
	if (store_txn_begin(st, 0, &txn) == 0) {
		crosspost_each_done(txn, print_own_crosspost, &r);
		store_txn_abort(txn);
	}
	if (r.crossposts == 0)
		printf("no cross-posts were made\n");
	json_decref(r.ids);
	return EXIT_OK;
}

int cmd_author(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	pipeline pipe = { 0 };
	char err[512];
	const char *verb, *handle = NULL;
	size_t npos;
	int rc, code;

	code = cmd_load_config(&author_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	code = EXIT_USAGE;
	npos = config_positional_count(cfg);
	if (npos < 1) {
		cmd_usage(stderr, &author_spec);
		goto done;
	}
	verb = config_positional(cfg, 0);
	if (strcmp(verb, "list") != 0) {
		if (npos < 2) {
			fprintf(stderr, "sayin-publisher author %s: give the author's HANDLE\n", verb);
			goto done;
		}
		handle = config_positional(cfg, 1);
		if (!publish_valid_handle(handle)) {
			fprintf(stderr, "sayin-publisher author: invalid handle '%s': use 1-32 of a-z, "
			                "0-9, _\n", handle);
			goto done;
		}
	}
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher author: %s\n", err);
		goto done;
	}
	if (strcmp(verb, "add") == 0) {
		const char *name = config_get(cfg, "name");
		if (name == NULL || npos != 2) {
			fprintf(stderr, "sayin-publisher author add: usage: author add HANDLE --name NAME\n");
			goto done;
		}
	} else if (!(strcmp(verb, "token") == 0 && npos == 2) &&
	           !(strcmp(verb, "edit") == 0 && npos == 2) &&
	           !(strcmp(verb, "remove") == 0 && npos == 2) &&
	           !(strcmp(verb, "revoke") == 0 && npos <= 3) &&
	           !(strcmp(verb, "rebuild") == 0 && npos == 2) &&
	           !(strcmp(verb, "list") == 0 && npos == 1)) {
		cmd_usage(stderr, &author_spec);
		goto done;
	}
	code = cmd_open_store(cfg, "author", &st);
	if (code < 0)
		code = cmd_apply_site(st, cfg, "author");
	if (code >= 0)
		goto done;
	pipeline_free(&pipe);
	if (pipeline_configure(&pipe, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher author: %s\n", err);
		code = EXIT_USAGE;
		goto done;
	}
	cmd_warn_public_url(&pipe);
	if (strcmp(verb, "add") == 0) {
		rc = publish_author_add(st, &pipe.publish, handle, config_get(cfg, "name"),
		                        clock_now_ms(), err, sizeof(err));
		if (rc != 0) {
			fprintf(stderr, "sayin-publisher author add: %s\n", err);
			code = rc == SAYIN_EINVAL ? EXIT_USAGE : cmd_store_exit(rc);
			goto done;
		}
		code = issue_token(st, handle);
	} else if (strcmp(verb, "edit") == 0) {
		code = edit_author(st, &pipe, handle, config_get(cfg, "name"), config_get(cfg, "bio"));
	} else if (strcmp(verb, "remove") == 0) {
		code = remove_author(st, &pipe, handle);
	} else if (strcmp(verb, "token") == 0) {
		code = issue_token(st, handle);
	} else if (strcmp(verb, "revoke") == 0) {
		code = revoke_tokens(st, handle, npos == 3 ? config_positional(cfg, 2) : NULL);
	} else if (strcmp(verb, "rebuild") == 0) {
		pipe.publish.create_authors = 0;
		rc = publish_rebuild(st, &pipe.publish, handle, clock_now_ms(), err, sizeof(err));
		if (rc != 0)
			fprintf(stderr, "sayin-publisher author rebuild: %s\n", err);
		code = cmd_store_exit(rc);
	} else {
		code = list_authors(st);
	}
done:
	pipeline_free(&pipe);
	store_close(st);
	config_free(cfg);
	return code;
}
