/* cmd fsck: checks that the store's posts, objects, names, index entries and
 * references agree, without writing. */
#include "cmd/cmd.h"

#include "core/error.h"
#include "core/jsonstore.h"
#include "core/log.h"
#include "core/store_backup.h"
#include "render/feed.h"
#include "render/page.h"
#include "render/record.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const config_arg fsck_args[] = {
	{ "snapshot", "FILE", "check a snapshot written by `backup` instead of the store in --data",
	  0 },
};

static const char *const fsck_settings[] = { "data", "feed-items", "feed-page-items",
	                                     "log-level", NULL };

static const cmd_spec fsck_spec = {
	.name = "fsck",
	.usage = "Usage: sayin-publisher fsck [--data DIR | --snapshot FILE] [options]\n\n"
	         "Checks, in one read transaction and without writing, that every post has\n"
	         "its record, its index entry, its author, its objects (audio, fallback,\n"
	         "waveform, card) with a reference from each, and its pages; that every\n"
	         "index entry and reference names a post that uses it; that every name\n"
	         "points at stored objects; that every object's bytes match its hash and\n"
	         "something refers to it; and that every author has its feed, author page\n"
	         "and archive pages (by --feed-items and --feed-page-items). Prints one line\n"
	         "per problem. Safe while the API and the origin run. Exit codes: 0 clean,\n"
	         "1 problems found (or the store cannot be read), 2 usage.\n",
	.args = fsck_args,
	.nargs = sizeof(fsck_args) / sizeof(fsck_args[0]),
	.settings = fsck_settings,
};

struct fsck {
	store_txn *txn;
	FILE *out;
	size_t problems;
	uint64_t feed_items, page_items;
	uint64_t posts, objects, names, refs, index, authors;
	uint8_t (*named)[STORE_HASH_LEN]; /* every object a name points at, sorted */
	size_t n_named, cap_named;
};

static void problem(struct fsck *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void problem(struct fsck *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(f->out, fmt, ap);
	va_end(ap);
	fputc('\n', f->out);
	f->problems++;
}

static const char *const enc_names[STORE_ENC_COUNT] = { "identity", "gzip", "br" };

/* The objects a post record names, by kind; NULL hex for the absent. */
struct post_objects {
	const char *kind[4];
	const char *hex[4];
};

static void post_objects_of(const record_view *v, struct post_objects *o)
{
	o->kind[0] = "audio";
	o->hex[0] = v->audio_sha256;
	o->kind[1] = "fallback";
	o->hex[1] = v->fallback_sha256;
	o->kind[2] = "waveform";
	o->hex[2] = v->waveform_sha256;
	o->kind[3] = "card";
	o->hex[3] = v->card_sha256;
}

static void check_name_exists(struct fsck *f, const char *what, const char *path)
{
	store_name n;
	int rc = store_get_name(f->txn, path, &n);
	if (rc == SAYIN_ENOTFOUND)
		problem(f, "%s: its name %s is missing", what, path);
	else if (rc != 0)
		problem(f, "%s: its name %s cannot be read: %s", what, path, sayin_strerror(rc));
}

static int check_post(void *arg, const char *id, const void *record, size_t len)
{
	struct fsck *f = arg;
	struct post_objects o;
	char what[128], path[256];
	const void *rec;
	size_t rlen;
	json_t *post = NULL;
	record_view v;
	int rc;

	f->posts++;
	snprintf(what, sizeof(what), "post %s", id);
	if (jsonstore_parse(record, len, &post) != 0) {
		problem(f, "%s: its record is not JSON", what);
		return 0;
	}
	record_view_read(post, &v);
	if (v.id == NULL || strcmp(v.id, id) != 0)
		problem(f, "%s: its record names id %s", what, v.id ? v.id : "(none)");
	if (v.author == NULL || v.seq == 0) {
		problem(f, "%s: its record has no author or seq", what);
		goto done;
	}
	rc = store_index_exists(f->txn, v.author, v.seq, id);
	if (rc == SAYIN_ENOTFOUND)
		problem(f, "%s: missing from %s's index (as #%llu)", what, v.author,
		        (unsigned long long)v.seq);
	else if (rc != 0)
		return rc;
	rc = store_get_author(f->txn, v.author, &rec, &rlen);
	if (rc == SAYIN_ENOTFOUND)
		problem(f, "%s: its author %s has no record", what, v.author);
	else if (rc != 0)
		return rc;
	if (v.audio_sha256 == NULL)
		problem(f, "%s: its record names no audio", what);
	post_objects_of(&v, &o);
	for (int i = 0; i < 4; i++) {
		uint8_t hash[STORE_HASH_LEN];
		store_object obj;
		if (o.hex[i] == NULL)
			continue;
		if (store_hash_from_hex(o.hex[i], strlen(o.hex[i]), hash) != 0) {
			problem(f, "%s: its %s hash '%s' is not a SHA-256", what, o.kind[i], o.hex[i]);
			continue;
		}
		rc = store_get_object(f->txn, hash, &obj);
		if (rc == SAYIN_ENOTFOUND)
			problem(f, "%s: its %s object %s is missing", what, o.kind[i], o.hex[i]);
		else if (rc == SAYIN_ECORRUPT)
			problem(f, "%s: its %s object %s is corrupt", what, o.kind[i], o.hex[i]);
		else if (rc != 0)
			return rc;
		rc = store_ref_exists(f->txn, hash, id);
		if (rc == SAYIN_ENOTFOUND)
			problem(f, "%s: its %s object %s has no reference from it (reference count too "
			        "low)", what, o.kind[i], o.hex[i]);
		else if (rc != 0)
			return rc;
	}
	if (feed_path_post(path, sizeof(path), id) == 0)
		check_name_exists(f, what, path);
	if (page_path_embed(path, sizeof(path), id) == 0)
		check_name_exists(f, what, path);
done:
	json_decref(post);
	return 0;
}

static int check_index(void *arg, int status, const char *author, uint64_t seq, const char *id)
{
	struct fsck *f = arg;
	const void *rec;
	size_t len;
	json_t *post = NULL;
	record_view v;
	int rc;

	f->index++;
	if (status != 0) {
		problem(f, "index of %s: an entry that does not decode", author);
		return 0;
	}
	rc = store_get_post(f->txn, id, &rec, &len);
	if (rc == SAYIN_ENOTFOUND) {
		problem(f, "index of %s: #%llu names post %s, which does not exist", author,
		        (unsigned long long)seq, id);
		return 0;
	}
	if (rc != 0)
		return rc;
	if (jsonstore_parse(rec, len, &post) != 0)
		return 0; /* reported by check_post */
	record_view_read(post, &v);
	if (v.author == NULL || strcmp(v.author, author) != 0 || v.seq != seq)
		problem(f, "index of %s: #%llu names post %s, whose record says %s #%llu", author,
		        (unsigned long long)seq, id, v.author ? v.author : "(none)",
		        (unsigned long long)v.seq);
	json_decref(post);
	return 0;
}

static int check_ref(void *arg, const uint8_t hash[STORE_HASH_LEN], const char *post_id)
{
	struct fsck *f = arg;
	char hex[STORE_HASH_HEX_LEN + 1];
	struct post_objects o;
	const void *rec;
	size_t len;
	json_t *post = NULL;
	record_view v;
	int used = 0, rc;

	f->refs++;
	store_hash_to_hex(hash, hex);
	rc = store_get_post(f->txn, post_id, &rec, &len);
	if (rc == SAYIN_ENOTFOUND) {
		problem(f, "object %s: referenced by post %s, which does not exist (reference count "
		        "too high)", hex, post_id);
		return 0;
	}
	if (rc != 0)
		return rc;
	if (jsonstore_parse(rec, len, &post) != 0)
		return 0; /* reported by check_post */
	record_view_read(post, &v);
	post_objects_of(&v, &o);
	for (int i = 0; i < 4; i++)
		used |= o.hex[i] != NULL && strcmp(o.hex[i], hex) == 0;
	if (!used)
		problem(f, "object %s: referenced by post %s, which does not use it (reference count "
		        "too high)", hex, post_id);
	json_decref(post);
	return 0;
}

static int note_named(struct fsck *f, const uint8_t hash[STORE_HASH_LEN])
{
	if (f->n_named == f->cap_named) {
		size_t cap = f->cap_named ? f->cap_named * 2 : 1024;
		void *p = realloc(f->named, cap * STORE_HASH_LEN);
		if (p == NULL)
			return -ENOMEM;
		f->named = p;
		f->cap_named = cap;
	}
	memcpy(f->named[f->n_named++], hash, STORE_HASH_LEN);
	return 0;
}

static int check_name(void *arg, int status, const char *name, const store_name *value)
{
	struct fsck *f = arg;
	int rc;

	f->names++;
	if (status != 0) {
		problem(f, "name %s: its value does not decode", name);
		return 0;
	}
	for (int e = 0; e < STORE_ENC_COUNT; e++) {
		char hex[STORE_HASH_HEX_LEN + 1];
		store_object obj;
		if (!(value->encodings & (1u << e)))
			continue;
		rc = note_named(f, value->variant[e]);
		if (rc != 0)
			return rc;
		store_hash_to_hex(value->variant[e], hex);
		rc = store_get_object(f->txn, value->variant[e], &obj);
		if (rc == SAYIN_ENOTFOUND)
			problem(f, "name %s: its %s object %s is missing", name, enc_names[e], hex);
		else if (rc == SAYIN_ECORRUPT)
			problem(f, "name %s: its %s object %s is corrupt", name, enc_names[e], hex);
		else if (rc != 0)
			return rc;
	}
	return 0;
}

static int hash_cmp(const void *a, const void *b)
{
	return memcmp(a, b, STORE_HASH_LEN);
}

static int check_object(void *arg, int status, const uint8_t hash[STORE_HASH_LEN],
                        const store_object *obj)
{
	struct fsck *f = arg;
	char hex[STORE_HASH_HEX_LEN + 1];
	unsigned char md[STORE_HASH_LEN];
	unsigned int n = 0;
	size_t refs = 0;
	int rc;

	f->objects++;
	store_hash_to_hex(hash, hex);
	if (status != 0) {
		problem(f, "object %s: its header does not decode", hex);
		return 0;
	}
	if (EVP_Digest(obj->data, (size_t)obj->size, md, &n, EVP_sha256(), NULL) != 1 ||
	    n != STORE_HASH_LEN)
		return SAYIN_ESTORE;
	if (memcmp(md, hash, STORE_HASH_LEN) != 0)
		problem(f, "object %s (%s, %llu bytes): its bytes do not match their hash", hex,
		        obj->content_type, (unsigned long long)obj->size);
	rc = store_ref_count(f->txn, hash, &refs);
	if (rc != 0)
		return rc;
	if (refs == 0 && bsearch(hash, f->named, f->n_named, STORE_HASH_LEN, hash_cmp) == NULL)
		problem(f, "object %s (%s, %llu bytes): no post or name refers to it (leaked)", hex,
		        obj->content_type, (unsigned long long)obj->size);
	return 0;
}

static int check_author(void *arg, const char *handle, const void *record, size_t len)
{
	struct fsck *f = arg;
	char what[128], path[256];
	json_t *author = NULL;
	record_author a;
	size_t count = 0;
	int rc;

	f->authors++;
	snprintf(what, sizeof(what), "author %s", handle);
	if (jsonstore_parse(record, len, &author) != 0) {
		problem(f, "%s: its record is not JSON", what);
		return 0;
	}
	record_author_read(author, &a);
	if (feed_path_feed(path, sizeof(path), handle) == 0)
		check_name_exists(f, what, path);
	if (feed_path_author(path, sizeof(path), handle) == 0)
		check_name_exists(f, what, path);
	/* Archive pages 1..newest, as documents_newest_page counts them. */
	if (a.last_seq > f->feed_items) {
		uint64_t newest = (a.last_seq - f->feed_items + f->page_items - 1) / f->page_items;
		for (uint64_t k = 1; k <= newest; k++) {
			if (feed_path_page(path, sizeof(path), handle, k) == 0)
				check_name_exists(f, what, path);
		}
	}
	rc = store_author_post_count(f->txn, handle, &count);
	if (rc == 0 && count > a.last_seq)
		problem(f, "%s: %zu posts indexed, but its last seq is %llu", what, count,
		        (unsigned long long)a.last_seq);
	json_decref(author);
	return rc;
}

/* Every check, in one read transaction; each problem one line on out.
 * Returns 0 when the walk completed (problems or not), else a store error. */
static int fsck_store(store *st, FILE *out, uint64_t feed_items, uint64_t page_items,
                      size_t *problems)
{
	struct fsck f = { .out = out, .feed_items = feed_items, .page_items = page_items };
	const char *stage = "begin";
	int rc = store_txn_begin(st, 0, &f.txn);

	if (rc == 0) {
		stage = "posts";
		rc = store_walk_posts(f.txn, check_post, &f);
	}
	if (rc == 0) {
		stage = "index";
		rc = store_walk_index(f.txn, check_index, &f);
	}
	if (rc == 0) {
		stage = "references";
		rc = store_walk_refs(f.txn, check_ref, &f);
	}
	if (rc == 0) {
		stage = "names";
		rc = store_walk_names(f.txn, check_name, &f);
	}
	if (rc == 0) {
		qsort(f.named, f.n_named, STORE_HASH_LEN, hash_cmp);
		stage = "objects";
		rc = store_walk_objects(f.txn, check_object, &f);
	}
	if (rc == 0) {
		stage = "authors";
		rc = store_each_record(f.txn, STORE_AUTHORS, "", check_author, &f);
	}
	if (rc == 0 && f.authors > 0)
		check_name_exists(&f, "the author list", "/authors.json");
	store_txn_abort(f.txn);
	free(f.named);
	if (rc != 0)
		fprintf(out, "fsck stopped at %s: %s\n", stage, sayin_strerror(rc));
	else
		fprintf(out, "fsck: %llu posts, %llu index entries, %llu references, %llu names, "
		        "%llu objects, %llu authors: %zu problems\n", (unsigned long long)f.posts,
		        (unsigned long long)f.index, (unsigned long long)f.refs,
		        (unsigned long long)f.names, (unsigned long long)f.objects,
		        (unsigned long long)f.authors, f.problems);
	*problems = f.problems;
	return rc;
}

static int fsck_store_settings(struct fsck *f, const config *cfg, char *err, size_t errlen)
{
	if (config_get_u64(cfg, "feed-items", 1, 1000, &f->feed_items, err, errlen) != 0 ||
	    config_get_u64(cfg, "feed-page-items", 1, 1000, &f->page_items, err, errlen) != 0)
		return SAYIN_ECONFIG;
	return 0;
}

int cmd_fsck(int argc, char **argv)
{
	store_options sopt = { .read_only = 1 };
	struct fsck sizes = { 0 };
	config *cfg = NULL;
	store *st = NULL;
	const char *snapshot, *what;
	size_t problems = 0;
	char err[512];
	int code, rc;

	code = cmd_load_config(&fsck_spec, argc, argv, &cfg);
	if (code >= 0)
		return code;
	snapshot = config_get(cfg, "snapshot");
	what = snapshot != NULL ? snapshot : config_get(cfg, "data");
	rc = snapshot != NULL ? store_snapshot_open(snapshot, &st) : store_open(what, &sopt, &st);
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher fsck: cannot open %s: %s\n", what, sayin_strerror(rc));
		config_free(cfg);
		return rc == SAYIN_ESTORENEWER || rc == SAYIN_ESTOREOLDER ? EXIT_USAGE : EXIT_FAIL;
	}
	/* The feed sizes the store's documents were written with: the
	 * recorded site's, as for every command. */
	if ((code = cmd_apply_site(st, cfg, "fsck")) >= 0) {
		store_close(st);
		config_free(cfg);
		return code;
	}
	if (fsck_store_settings(&sizes, cfg, err, sizeof(err)) != 0) {
		fprintf(stderr, "sayin-publisher fsck: %s\n", err);
		store_close(st);
		config_free(cfg);
		return EXIT_USAGE;
	}
	rc = fsck_store(st, stdout, sizes.feed_items, sizes.page_items, &problems);
	if (rc != 0)
		fprintf(stderr, "sayin-publisher fsck: %s: %s\n", what, sayin_strerror(rc));
	if (rc != 0 || problems > 0)
		log_error("fsck: %s: %zu problems%s", what, problems, rc != 0 ? ", check incomplete" : "");
	else
		log_info("fsck: %s: clean", what);
	store_close(st);
	config_free(cfg);
	return rc == 0 && problems == 0 ? EXIT_OK : EXIT_FAIL;
}
