/* cmd s3: `s3 verify [--repair]` compares the S3 bucket with the store. */
#include "cmd/cmd.h"
#include "cmd/textfile.h"

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "core/store_backup.h"
#include "deliver/cdn/aws.h"
#include "deliver/cdn/cdn.h"
#include "deliver/net.h"
#include "deliver/outbox.h"
#include "deliver/payload.h"
#include "publish.h"
#include "render/page.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static const config_arg s3_args[] = {
	{ "repair", NULL, "enqueue the push and delete jobs that fix every difference", 1 },
	{ "json", NULL, "print the result as one JSON object", 1 },
	{ "metrics-textfile", "FILE", "write this run's metrics to FILE for node_exporter's "
	                               "textfile collector (replaced atomically)", 0 },
};

static const char *const s3_settings[] = { "data", "map-size", "s3-bucket", "s3-endpoint",
	                                   "aws-access-key-id", "aws-secret-access-key",
	                                   "aws-secret-access-key-file", "aws-region",
	                                   "log-level", NULL };

static const cmd_spec s3_spec = {
	.name = "s3",
	.usage = "Usage: sayin-publisher s3 verify [--repair] [--json] [options]\n\n"
	         "Compares the bucket (--s3-bucket) with the store: every current name (its\n"
	         "identity bytes, and its _gzip/ and _br/ variant keys) and every object a\n"
	         "post refers to must be in the bucket with the same bytes (S3's ETag, the\n"
	         "MD5 of a single-part PUT); no other key may be left, except backups/.\n"
	         "Prints a summary line and one line per difference (missing, different,\n"
	         "extra). --repair enqueues, in one store transaction, the s3 jobs that fix\n"
	         "them: they run with the next `push` or in serve's delivery worker; the\n"
	         "bucket is never written here. Exit codes: 0 in sync, 1 differences found\n"
	         "(or the bucket cannot be read), 2 usage.\n\n",
	.args = s3_args,
	.nargs = sizeof(s3_args) / sizeof(s3_args[0]),
	.settings = s3_settings,
};

/* A key the bucket should hold: what it should hold, and what to push to
 * fix it (a name's path, or an object's path, hash and type). */
struct want {
	char *key;                 /* "u/ann/feed.json", no leading "/" */
	char md5[33];
	char *name;                /* the name to push; NULL for an object */
	char *object_path;         /* "/a/HEX.opus" */
	char hex[STORE_HASH_HEX_LEN + 1];
	char ctype[STORE_CTYPE_MAX + 1];
	int seen;
};

struct have {
	char *key;
	char etag[64];
};

struct verify {
	store_txn *txn;
	struct want *want;
	size_t n_want, cap_want;
	struct have *have;
	size_t n_have, cap_have;
	int failed; /* out of memory, or a store read failed */
};

static void md5_hex(const void *bytes, size_t len, char out[33])
{
	static const char d[] = "0123456789abcdef";
	unsigned char md[16];
	unsigned int n = 0;
	EVP_Digest(bytes, len, md, &n, EVP_md5(), NULL);
	for (int i = 0; i < 16; i++) {
		out[2 * i] = d[md[i] >> 4];
		out[2 * i + 1] = d[md[i] & 15];
	}
	out[32] = '\0';
}

static struct want *want_add(struct verify *v, const char *prefix, const char *path,
                             const store_object *obj)
{
	struct want *w;
	size_t plen = strlen(path);
	char key[2048];

	if (v->n_want == v->cap_want) {
		size_t cap = v->cap_want ? v->cap_want * 2 : 256;
		void *p = realloc(v->want, cap * sizeof(*v->want));
		if (p == NULL)
			return NULL;
		v->want = p;
		v->cap_want = cap;
	}
	/* The s3 driver's key: prefix + path + "index.html" for a "/" name,
	 * without the leading "/". */
	snprintf(key, sizeof(key), "%s%s%s", prefix, path,
	         plen > 0 && path[plen - 1] == '/' ? "index.html" : "");
	w = &v->want[v->n_want];
	memset(w, 0, sizeof(*w));
	w->key = strdup(key[0] == '/' ? key + 1 : key);
	if (w->key == NULL)
		return NULL;
	md5_hex(obj->data, (size_t)obj->size, w->md5);
	v->n_want++;
	return w;
}

static const char *const variant_prefix[STORE_ENC_COUNT] = { "", "/_gzip", "/_br" };

static int want_name(void *arg, int status, const char *name, const store_name *value)
{
	struct verify *v = arg;
	store_object obj;

	if (status != 0)
		return 0; /* fsck reports it; the bucket cannot have it right */
	for (int e = 0; e < STORE_ENC_COUNT; e++) {
		const uint8_t *hash = (value->encodings & (1u << e)) ? value->variant[e] : value->hash;
		struct want *w;
		if (store_get_object(v->txn, hash, &obj) != 0)
			continue;
		w = want_add(v, variant_prefix[e], name, &obj);
		if (w == NULL || (w->name = strdup(name)) == NULL) {
			v->failed = -ENOMEM;
			return 1;
		}
	}
	return 0;
}

static const char *object_ext(const char *ctype)
{
	if (strcmp(ctype, PUBLISH_OPUS_TYPE) == 0)
		return "opus";
	if (strcmp(ctype, PUBLISH_M4A_TYPE) == 0)
		return "m4a";
	if (strcmp(ctype, PAGE_CARD_TYPE) == 0)
		return "png";
	return "json";
}

static int want_ref(void *arg, const uint8_t hash[STORE_HASH_LEN], const char *post_id)
{
	struct verify *v = arg;
	char hex[STORE_HASH_HEX_LEN + 1], path[128];
	store_object obj;
	struct want *w;

	(void)post_id;
	if (store_get_object(v->txn, hash, &obj) != 0)
		return 0;
	store_hash_to_hex(hash, hex);
	snprintf(path, sizeof(path), "/a/%s.%s", hex, object_ext(obj.content_type));
	/* Several posts may refer to one object: one key. refs walk in hash
	 * order, so a repeat is the previous entry. */
	if (v->n_want > 0 && v->want[v->n_want - 1].object_path != NULL &&
	    strcmp(v->want[v->n_want - 1].object_path, path) == 0)
		return 0;
	w = want_add(v, "", path, &obj);
	if (w == NULL || (w->object_path = strdup(path)) == NULL) {
		v->failed = -ENOMEM;
		return 1;
	}
	snprintf(w->hex, sizeof(w->hex), "%s", hex);
	snprintf(w->ctype, sizeof(w->ctype), "%s", obj.content_type);
	return 0;
}

static int want_cmp(const void *a, const void *b)
{
	return strcmp(((const struct want *)a)->key, ((const struct want *)b)->key);
}

/* The bucket listing, page by page (ListObjectsV2). */
struct lister {
	net *net;
	long status;
	char error[600];
	char *body;
	int done;
};

static void list_done(void *arg, const net_response *res, const net_headers *h)
{
	struct lister *l = arg;
	const char *code = res->body != NULL ? strstr(res->body, "<Code>") : NULL;

	(void)h;
	l->status = res->status;
	l->done = 1;
	if (res->status == 0)
		snprintf(l->error, sizeof(l->error), "%s", res->error ? res->error : "transport failed");
	else if (res->status < 200 || res->status >= 300)
		snprintf(l->error, sizeof(l->error), "HTTP %ld %.*s", res->status,
		         code ? (int)strcspn(code + 6, "<") : 0, code ? code + 6 : "");
	else if ((l->body = strdup(res->body ? res->body : "")) == NULL)
		snprintf(l->error, sizeof(l->error), "out of memory");
	net_close(l->net, NULL, NULL);
}

/* Copies the text between <tag> and </tag> after from into out (XML
 * entities &amp; &quot; decoded); returns the end of the element or NULL. */
static const char *xml_text(const char *from, const char *end, const char *tag, char *out,
                            size_t len)
{
	char open[40], close[40];
	const char *s, *e;
	size_t n = 0;

	snprintf(open, sizeof(open), "<%s>", tag);
	snprintf(close, sizeof(close), "</%s>", tag);
	s = strstr(from, open);
	if (s == NULL || (end != NULL && s >= end))
		return NULL;
	s += strlen(open);
	e = strstr(s, close);
	if (e == NULL)
		return NULL;
	while (s < e && n + 1 < len) {
		if (strncmp(s, "&amp;", 5) == 0) {
			out[n++] = '&';
			s += 5;
		} else if (strncmp(s, "&quot;", 6) == 0) {
			out[n++] = '"';
			s += 6;
		} else {
			out[n++] = *s++;
		}
	}
	out[n] = '\0';
	return e + strlen(close);
}

static void url_encode(const char *in, char *out, size_t len)
{
	static const char d[] = "0123456789ABCDEF";
	size_t n = 0;
	for (; *in != '\0' && n + 4 < len; in++) {
		unsigned char c = (unsigned char)*in;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~') {
			out[n++] = (char)c;
		} else {
			out[n++] = '%';
			out[n++] = d[c >> 4];
			out[n++] = d[c & 15];
		}
	}
	out[n] = '\0';
}

struct bucket {
	char base[512];
	char bucket[128];
	char sigv4[128];
	cdn_aws aws;
};

/* Lists every key of b into v->have. Returns 0, or -EIO with err saying
 * why (the HTTP status and S3's code, or the transport's error). */
static int list_bucket(const struct bucket *b, struct verify *v, char *err, size_t errlen)
{
	static const char *const hdrs[] = {
		"x-amz-content-sha256: "
		"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
		NULL
	};
	char token[1024] = "", enc[3200], url[4096];

	for (;;) {
		struct lister l = { 0 };
		uv_loop_t loop;
		const char *p, *q;
		char truncated[16] = "";
		int rc;

		if (token[0] != '\0') {
			url_encode(token, enc, sizeof(enc));
			snprintf(url, sizeof(url), "%s/%s?continuation-token=%s&list-type=2", b->base,
			         b->bucket, enc);
		} else {
			snprintf(url, sizeof(url), "%s/%s?list-type=2", b->base, b->bucket);
		}
		rc = uv_loop_init(&loop);
		if (rc != 0) {
			snprintf(err, errlen, "event loop: %s", uv_strerror(rc));
			return -EIO;
		}
		rc = net_create(&loop, 1, &l.net);
		if (rc == 0) {
			net_request req = { .method = "GET", .url = url, .headers = hdrs,
				            .aws_sigv4 = b->sigv4, .userpwd = b->aws.userpwd,
				            .timeout_ms = 60000 };
			rc = net_send(l.net, &req, list_done, &l);
			if (rc != 0)
				net_close(l.net, NULL, NULL);
			uv_run(&loop, UV_RUN_DEFAULT);
		}
		uv_loop_close(&loop);
		if (rc != 0 || !l.done || l.error[0] != '\0') {
			const char *why = "";
			if (l.status == 404)
				why = "no such bucket: ";
			else if (l.status == 403)
				why = "access denied (check --aws-access-key-id, --aws-secret-access-key "
				      "and --aws-region): ";
			snprintf(err, errlen, "cannot list bucket '%s' at %s: %s%s", b->bucket, b->base,
			         why, rc != 0 ? sayin_strerror(rc) : l.done ? l.error : "no answer");
			free(l.body);
			return -EIO;
		}
		p = l.body;
		while ((q = strstr(p, "<Contents>")) != NULL) {
			const char *end = strstr(q, "</Contents>");
			char key[2048], etag[80];
			struct have *h;
			if (end == NULL || xml_text(q, end, "Key", key, sizeof(key)) == NULL)
				break;
			if (xml_text(q, end, "ETag", etag, sizeof(etag)) == NULL)
				etag[0] = '\0';
			if (v->n_have == v->cap_have) {
				size_t cap = v->cap_have ? v->cap_have * 2 : 256;
				void *np = realloc(v->have, cap * sizeof(*v->have));
				if (np == NULL) {
					free(l.body);
					snprintf(err, errlen, "out of memory");
					return -ENOMEM;
				}
				v->have = np;
				v->cap_have = cap;
			}
			h = &v->have[v->n_have];
			h->key = strdup(key);
			if (h->key == NULL) {
				free(l.body);
				snprintf(err, errlen, "out of memory");
				return -ENOMEM;
			}
			/* The ETag is quoted: "md5". */
			snprintf(h->etag, sizeof(h->etag), "%.*s", (int)strcspn(etag + (etag[0] == '"'), "\""),
			         etag + (etag[0] == '"'));
			v->n_have++;
			p = end;
		}
		xml_text(l.body, NULL, "IsTruncated", truncated, sizeof(truncated));
		token[0] = '\0';
		if (strcmp(truncated, "true") == 0)
			xml_text(l.body, NULL, "NextContinuationToken", token, sizeof(token));
		free(l.body);
		if (token[0] == '\0')
			return 0;
	}
}

static int bucket_configure(const config *cfg, struct bucket *b, char *err, size_t errlen)
{
	const char *name = config_get(cfg, "s3-bucket"), *endpoint = config_get(cfg, "s3-endpoint");
	int rc;

	if (name == NULL || *name == '\0' || strlen(name) >= sizeof(b->bucket)) {
		snprintf(err, errlen, "s3 verify needs --s3-bucket");
		return SAYIN_ECONFIG;
	}
	rc = cdn_aws_configure(cfg, "s3 verify", &b->aws, err, errlen);
	if (rc != 0)
		return rc;
	if (endpoint != NULL && *endpoint != '\0')
		cdn_copy_base_url(b->base, sizeof(b->base), endpoint);
	else
		snprintf(b->base, sizeof(b->base), "https://s3.%s.amazonaws.com", b->aws.region);
	snprintf(b->bucket, sizeof(b->bucket), "%s", name);
	snprintf(b->sigv4, sizeof(b->sigv4), "aws:amz:%s:s3", b->aws.region);
	return 0;
}

/* The outcome, with what --repair enqueues. */
struct diff {
	unsigned long missing, different, extra;
	json_t *list;     /* [{ "key", "problem" }] */
	json_t *paths, *objects, *removed;
};

static int note(struct diff *d, const char *problem, const char *key, int as_json)
{
	if (!as_json)
		printf("%s /%s\n", problem, key);
	return json_array_append_new(d->list, json_pack("{s:s, s:s}", "problem", problem, "key",
	                                                 key));
}

static int name_listed(const json_t *paths, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(paths, i, v) {
		if (strcmp(json_string_value(v), name) == 0)
			return 1;
	}
	return 0;
}

/* Compares v->want (sorted) with v->have (sorted), filling d. */
static int compare(struct verify *v, struct diff *d, int as_json)
{
	size_t i = 0, j = 0;
	int rc = 0;

	while (rc == 0 && (i < v->n_want || j < v->n_have)) {
		int c = i >= v->n_want ? 1 : j >= v->n_have ? -1 : strcmp(v->want[i].key, v->have[j].key);
		struct want *w = c <= 0 ? &v->want[i] : NULL;
		if (c > 0) {
			char path[2100];
			/* Snapshots written by `backup --to-s3` are not the site's. */
			if (strncmp(v->have[j].key, "backups/", 8) != 0) {
				d->extra++;
				rc = note(d, "extra", v->have[j].key, as_json);
				snprintf(path, sizeof(path), "/%s", v->have[j].key);
				if (rc == 0)
					rc = json_array_append_new(d->removed, json_string(path));
			}
			j++;
			continue;
		}
		if (c < 0) {
			d->missing++;
			rc = note(d, "missing", w->key, as_json);
		} else if (strcmp(w->md5, v->have[j].etag) != 0) {
			d->different++;
			rc = note(d, "different", w->key, as_json);
		} else {
			i++;
			j++;
			continue;
		}
		if (rc == 0 && w->name != NULL && !name_listed(d->paths, w->name))
			rc = json_array_append_new(d->paths, json_string(w->name));
		else if (rc == 0 && w->object_path != NULL)
			rc = json_array_append_new(d->objects, payload_object_new(w->object_path, w->hex,
			                                                          w->ctype));
		i++;
		if (c == 0)
			j++;
	}
	return rc == 0 ? 0 : -ENOMEM;
}

/* One job for the s3 target, in one write transaction: the same payload a
 * publish would enqueue for these paths and objects. */
static int enqueue_repair(store *st, struct diff *d, char id[OUTBOX_ID_LEN + 1])
{
	json_t *const lists[PAYLOAD_LIST_COUNT] = {
		[PAYLOAD_PATHS] = d->paths, [PAYLOAD_KEYS] = json_array(),
		[PAYLOAD_OBJECTS] = d->objects, [PAYLOAD_REMOVED] = d->removed,
	};
	json_t *payload = payload_cdn_new("repair", "", NULL, lists);
	store_txn *txn;
	int rc;

	json_decref(lists[PAYLOAD_KEYS]);
	if (payload == NULL)
		return -ENOMEM;
	rc = store_txn_begin(st, 1, &txn);
	if (rc == 0) {
		rc = outbox_enqueue(txn, "s3", payload, NULL, 0, clock_now_ms(), id);
		if (rc == 0)
			rc = store_txn_commit(txn);
		else
			store_txn_abort(txn);
	}
	json_decref(payload);
	return rc;
}

static void verify_free(struct verify *v)
{
	for (size_t i = 0; i < v->n_want; i++) {
		free(v->want[i].key);
		free(v->want[i].name);
		free(v->want[i].object_path);
	}
	for (size_t i = 0; i < v->n_have; i++)
		free(v->have[i].key);
	free(v->want);
	free(v->have);
}

static int have_cmp(const void *a, const void *b)
{
	return strcmp(((const struct have *)a)->key, ((const struct have *)b)->key);
}

int cmd_s3(int argc, char **argv)
{
	config *cfg = NULL;
	store *st = NULL;
	struct verify v = { 0 };
	struct bucket b = { 0 };
	struct diff d = { 0 };
	char err[2048] = "", job[OUTBOX_ID_LEN + 1] = "";
	double t0 = clock_mono_ms_f();
	int code, rc, as_json, repair, reached = 0;

	if (argc < 2 || strcmp(argv[1], "verify") != 0) {
		if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
			cmd_usage(stdout, &s3_spec);
			return EXIT_OK;
		}
		fprintf(stderr, "sayin-publisher s3: expected `s3 verify [--repair]`\n");
		cmd_usage(stderr, &s3_spec);
		return EXIT_USAGE;
	}
	code = cmd_load_config(&s3_spec, argc - 1, argv + 1, &cfg);
	if (code >= 0)
		return code;
	as_json = config_get(cfg, "json") != NULL;
	repair = config_get(cfg, "repair") != NULL;
	rc = bucket_configure(cfg, &b, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher s3: %s\n", err);
		config_free(cfg);
		return EXIT_USAGE;
	}
	code = cmd_open_store(cfg, "s3", &st);
	if (code >= 0)
		goto done;
	code = EXIT_FAIL;
	/* What the bucket should hold, read in one transaction. */
	rc = store_txn_begin(st, 0, &v.txn);
	if (rc == 0) {
		rc = store_walk_names(v.txn, want_name, &v);
		if (rc == 0)
			rc = store_walk_refs(v.txn, want_ref, &v);
		store_txn_abort(v.txn);
		v.txn = NULL;
	}
	if (rc == 0 && v.failed != 0)
		rc = v.failed;
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher s3: cannot read the store: %s\n", sayin_strerror(rc));
		log_error("s3 verify: store read failed: %s", sayin_strerror(rc));
		goto done;
	}
	rc = list_bucket(&b, &v, err, sizeof(err));
	if (rc != 0) {
		fprintf(stderr, "sayin-publisher s3: %s\n", err);
		log_error("s3 verify: %s", err);
		goto done;
	}
	reached = 1;
	if (v.n_want > 0)
		qsort(v.want, v.n_want, sizeof(*v.want), want_cmp);
	if (v.n_have > 0)
		qsort(v.have, v.n_have, sizeof(*v.have), have_cmp);
	d.list = json_array();
	d.paths = json_array();
	d.objects = json_array();
	d.removed = json_array();
	if (d.list == NULL || d.paths == NULL || d.objects == NULL || d.removed == NULL ||
	    compare(&v, &d, as_json) != 0) {
		fprintf(stderr, "sayin-publisher s3: out of memory\n");
		goto done;
	}
	if (repair && d.list != NULL && json_array_size(d.list) > 0) {
		rc = enqueue_repair(st, &d, job);
		if (rc != 0) {
			fprintf(stderr, "sayin-publisher s3: cannot enqueue the repair: %s\n",
			        sayin_strerror(rc));
			code = cmd_store_exit(rc);
			goto done;
		}
	}
	{
		unsigned long n = d.missing + d.different + d.extra;
		if (as_json) {
			json_t *o = json_pack("{s:b, s:I, s:I, s:I, s:I, s:I, s:O, s:s?}", "in_sync", n == 0,
			                      "expected", (json_int_t)v.n_want, "listed",
			                      (json_int_t)v.n_have, "missing", (json_int_t)d.missing,
			                      "different", (json_int_t)d.different, "extra",
			                      (json_int_t)d.extra, "differences", d.list, "repair_job",
			                      job[0] ? job : NULL);
			char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
			if (s != NULL)
				printf("%s\n", s);
			free(s);
			json_decref(o);
		}
		log_info("s3 verify: bucket %s: %zu keys expected, %zu listed, %lu missing, "
		         "%lu different, %lu extra%s", b.bucket, v.n_want, v.n_have, d.missing,
		         d.different, d.extra, job[0] ? ", repair enqueued" : "");
		if (!as_json) {
			printf("s3 verify: bucket %s %s: %zu keys expected, %zu listed, %lu missing, "
			       "%lu different, %lu extra\n", b.bucket, n == 0 ? "in sync" : "differs",
			       v.n_want, v.n_have, d.missing, d.different, d.extra);
			if (job[0] != '\0')
				printf("repair: enqueued outbox job %s for target s3; it runs with the next "
				       "`sayin-publisher push` or in serve's delivery worker\n", job);
		}
		code = n == 0 ? EXIT_OK : EXIT_FAIL;
	}
done:
	if (cfg != NULL && config_get(cfg, "metrics-textfile") != NULL && code != EXIT_USAGE) {
		char extra[512];
		cron_run run = { .command = "s3-verify", .success = code == EXIT_OK,
			         .duration_s = (clock_mono_ms_f() - t0) / 1e3, .extra = extra };
		snprintf(extra, sizeof(extra),
		         "# HELP sayin_s3_verify_differences Keys that differ (missing, different, "
		         "extra) at the last s3 verify.\n"
		         "# TYPE sayin_s3_verify_differences gauge\n"
		         "sayin_s3_verify_differences{kind=\"missing\"} %lu\n"
		         "sayin_s3_verify_differences{kind=\"different\"} %lu\n"
		         "sayin_s3_verify_differences{kind=\"extra\"} %lu\n"
		         "# HELP sayin_s3_verify_reached 1 if the last s3 verify could list the bucket.\n"
		         "# TYPE sayin_s3_verify_reached gauge\nsayin_s3_verify_reached %d\n",
		         d.missing, d.different, d.extra, reached);
		if (cron_textfile_write(config_get(cfg, "metrics-textfile"), &run) != 0 &&
		    code == EXIT_OK)
			code = EXIT_FAIL;
	}
	json_decref(d.list);
	json_decref(d.paths);
	json_decref(d.objects);
	json_decref(d.removed);
	verify_free(&v);
	store_close(st);
	config_free(cfg);
	return code;
}
