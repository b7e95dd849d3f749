/* store: the LMDB environment, transactions and the tables (objects: store_object.c). */
#include "core/store.h"

#include "core/store_internal.h"

#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"

#include <errno.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define STORE_NAME_MAX 400      /* below LMDB's 511-byte key limit */
#define STORE_ID_MAX 64
#define STORE_HANDLE_MAX 64
#define DBI_ABSENT ((MDB_dbi)~0u) /* a table missing from a read-only store */

/* A name's value: this header, then the surrogate key and a NUL. */
struct name_value {
	uint32_t encodings;
	uint32_t key_len;
	int64_t updated;
	uint8_t variant[STORE_ENC_COUNT][STORE_HASH_LEN];
};

/* Translates an LMDB code at the module's edge, logging LMDB's own words. */
int store__error(int rc, const char *what)
{
	switch (rc) {
	case MDB_SUCCESS: return 0;
	case MDB_NOTFOUND: return SAYIN_ENOTFOUND;
	case MDB_MAP_FULL:
		log_error("store: %s: %s", what, mdb_strerror(rc));
		return SAYIN_ESTOREFULL;
	case MDB_READERS_FULL:
		log_warn("store: %s: %s", what, mdb_strerror(rc));
		return SAYIN_EREADERS;
	case MDB_KEYEXIST: return -EEXIST;
	case MDB_CORRUPTED:
	case MDB_PAGE_NOTFOUND:
	case MDB_INVALID:
	case MDB_VERSION_MISMATCH:
		log_error("store: %s: %s", what, mdb_strerror(rc));
		return SAYIN_ECORRUPT;
	default: break;
	}
	if (rc > 0 && rc < 1000) {
		/* LMDB passes errno values through. */
		if (rc != ENOENT)
			log_error("store: %s: %s", what, mdb_strerror(rc));
		return -rc;
	}
	log_error("store: %s: %s", what, mdb_strerror(rc));
	return SAYIN_ESTORE;
}

static int store_open_dbis(store *st)
{
	static const struct {
		const char *name;
		unsigned flags;
		size_t offset;
	} dbs[] = {
		{ "objects", 0, offsetof(store, objects) },
		{ "names", 0, offsetof(store, names) },
		{ "posts", 0, offsetof(store, posts) },
		{ "author_posts", MDB_DUPSORT, offsetof(store, author_posts) },
		{ "authors", 0, offsetof(store, tables[STORE_AUTHORS]) },
		{ "refs", MDB_DUPSORT, offsetof(store, refs) },
		{ "tokens", 0, offsetof(store, tables[STORE_TOKENS]) },
		{ "idempotency", 0, offsetof(store, tables[STORE_IDEMPOTENCY]) },
		{ "outbox", 0, offsetof(store, tables[STORE_OUTBOX]) },
		{ "meta", 0, offsetof(store, tables[STORE_META]) },
		{ "crossposts", 0, offsetof(store, tables[STORE_CROSSPOSTS]) },
	};
	MDB_txn *txn;
	MDB_dbi main_dbi;
	MDB_stat main_stat;
	int fresh = 0;
	int rc = mdb_txn_begin(st->env, NULL, st->read_only ? MDB_RDONLY : 0, &txn);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "begin (open databases)");
	/* A writer finding no table at all creates the store: it is born at
	 * the current format (a store with tables but no format record is
	 * an old one, format 1). */
	if (!st->read_only && mdb_dbi_open(txn, NULL, 0, &main_dbi) == MDB_SUCCESS &&
	    mdb_stat(txn, main_dbi, &main_stat) == MDB_SUCCESS && main_stat.ms_entries == 0)
		fresh = 1;
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		unsigned flags = dbs[i].flags | (st->read_only ? 0 : MDB_CREATE);
		MDB_dbi *dbi = (MDB_dbi *)((char *)st + dbs[i].offset);
		rc = mdb_dbi_open(txn, dbs[i].name, flags, dbi);
		/* A reader of a store an older publisher wrote: the tables it did
		 * not have yet read as empty (the origin needs only the first four). */
		if (rc == MDB_NOTFOUND && st->read_only && i >= 4) {
			*dbi = DBI_ABSENT;
			continue;
		}
		if (rc != MDB_SUCCESS) {
			mdb_txn_abort(txn);
			/* A read-only opener of a store no publisher has written yet. */
			if (rc == MDB_NOTFOUND)
				return -ENOENT;
			return store__error(rc, "open database");
		}
	}
	if (fresh) {
		char v[16];
		MDB_val k = { strlen(STORE_FORMAT_KEY), (void *)STORE_FORMAT_KEY }, val;
		val.mv_size = (size_t)snprintf(v, sizeof(v), "%u", STORE_FORMAT_VERSION);
		val.mv_data = v;
		rc = mdb_put(txn, st->tables[STORE_META], &k, &val, 0);
		if (rc != MDB_SUCCESS) {
			mdb_txn_abort(txn);
			return store__error(rc, "record format");
		}
	}
	rc = mdb_txn_commit(txn);
	return store__error(rc, "commit (open databases)");
}

/* The writer's data file: its descriptor, map address and page size. */
static int store_locate_file(store *st)
{
	MDB_stat stat;
	mdb_filehandle_t fd;
	int rc = mdb_env_get_fd(st->env, &fd);

	if (rc != MDB_SUCCESS)
		return store__error(rc, "data file");
	mdb_env_stat(st->env, &stat);
	st->fd = fd;
	st->psize = stat.ms_psize;
	return 0;
}

static int read_format(MDB_txn *txn, const store *st, unsigned *out)
{
	MDB_val k = { strlen(STORE_FORMAT_KEY), (void *)STORE_FORMAT_KEY }, val;
	char buf[16];
	char *end;
	unsigned long v;
	int rc;

	*out = 1;
	if (st->tables[STORE_META] == DBI_ABSENT)
		return 0;
	rc = mdb_get(txn, st->tables[STORE_META], &k, &val);
	if (rc == MDB_NOTFOUND)
		return 0;
	if (rc != MDB_SUCCESS)
		return store__error(rc, "read format");
	if (val.mv_size == 0 || val.mv_size >= sizeof(buf))
		return SAYIN_ECORRUPT;
	memcpy(buf, val.mv_data, val.mv_size);
	buf[val.mv_size] = '\0';
	errno = 0;
	v = strtoul(buf, &end, 10);
	if (errno != 0 || *end != '\0' || buf[0] < '1' || buf[0] > '9' || v > 1000000)
		return SAYIN_ECORRUPT;
	*out = (unsigned)v;
	return 0;
}

/* Refuses a store of a newer format, and of an older one unless
 * any_format: this program would misread the one and must migrate the
 * other first. */
static int store_check_format(store *st, const char *dir, int any_format)
{
	MDB_txn *txn;
	unsigned v;
	int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);

	if (rc != MDB_SUCCESS)
		return store__error(rc, "begin (format)");
	rc = read_format(txn, st, &v);
	mdb_txn_abort(txn);
	if (rc != 0) {
		log_error("store: %s: the format record is unreadable: %s", dir, sayin_strerror(rc));
		return rc;
	}
	if (v > STORE_FORMAT_VERSION) {
		log_error("store: %s is of format %u, newer than this program's %u: run a newer "
		          "sayin (or restore a backup made before the upgrade)", dir, v,
		          STORE_FORMAT_VERSION);
		return SAYIN_ESTORENEWER;
	}
	if (v < STORE_FORMAT_VERSION && !any_format) {
		log_error("store: %s is of format %u, older than this program's %u: run "
		          "`sayin-publisher migrate` first", dir, v, STORE_FORMAT_VERSION);
		return SAYIN_ESTOREOLDER;
	}
	return 0;
}

int store_open(const char *dir, const store_options *opt, store **out)
{
	store_options defaults = { 0 };
	store *st;
	int rc;

	if (opt == NULL)
		opt = &defaults;
	if (!opt->read_only && mkdir(dir, 0750) != 0 && errno != EEXIST) {
		rc = -errno;
		log_error("store: cannot create %s: %s", dir, sayin_strerror(rc));
		return rc;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->read_only = opt->read_only;
	atomic_init(&st->open_txns, 0);
	pthread_mutex_init(&st->remap_lock, NULL);
	rc = mdb_env_create(&st->env);
	if (rc != MDB_SUCCESS) {
		free(st);
		return store__error(rc, "env create");
	}
	mdb_env_set_maxdbs(st->env, 16);
	mdb_env_set_maxreaders(st->env, opt->max_readers ? opt->max_readers : 4096);
	if (opt->map_size != 0)
		mdb_env_set_mapsize(st->env, opt->map_size);
	else if (!opt->read_only)
		mdb_env_set_mapsize(st->env, STORE_DEFAULT_MAP_SIZE);
	/* MDB_NOTLS: a thread may hold several read transactions (one per
	 * response in flight), and they are not tied to thread-local slots. */
	rc = mdb_env_open(st->env, dir,
	                  MDB_NOTLS | (opt->read_only ? MDB_RDONLY : MDB_WRITEMAP), 0640);
	if (rc != MDB_SUCCESS) {
		rc = store__error(rc, dir);
		mdb_env_close(st->env);
		free(st);
		return rc;
	}
	if (!opt->read_only && opt->map_size == 0) {
		/* Keep a store created with a larger map at its size. */
		MDB_envinfo info;
		mdb_env_info(st->env, &info);
		if (info.me_mapsize < STORE_DEFAULT_MAP_SIZE)
			mdb_env_set_mapsize(st->env, STORE_DEFAULT_MAP_SIZE);
	}
	rc = store_open_dbis(st);
	if (rc == 0 && !opt->read_only)
		rc = store_locate_file(st);
	if (rc == 0)
		rc = store_check_format(st, dir, opt->any_format);
	if (rc != 0) {
		mdb_env_close(st->env);
		free(st);
		return rc;
	}
	*out = st;
	return 0;
}

void store_close(store *st)
{
	if (st == NULL)
		return;
	mdb_env_close(st->env);
	pthread_mutex_destroy(&st->remap_lock);
	free(st);
}

/* Adopts a map size grown by another process, if no transaction of ours
 * can still point into the current map. Returns 1 if it remapped. */
static int store_adopt_map_size(store *st)
{
	int remapped = 0;
	pthread_mutex_lock(&st->remap_lock);
	if (atomic_load(&st->open_txns) == 0 && mdb_env_set_mapsize(st->env, 0) == MDB_SUCCESS)
		remapped = 1;
	pthread_mutex_unlock(&st->remap_lock);
	return remapped;
}

int store_txn_begin(store *st, int write, store_txn **out)
{
	unsigned flags = write ? 0 : MDB_RDONLY;
	store_txn *t;
	int rc;

	if (write && st->read_only)
		return SAYIN_EREADONLY;
	t = malloc(sizeof(*t));
	if (t == NULL)
		return -ENOMEM;
	t->st = st;
	t->reader = NULL;
	t->next_free = NULL;
	t->write = write;
	t->declared = 0;
	t->allocated = 0;
	/* Counted before it exists, so a concurrent remap cannot slip in
	 * between a successful begin and the count. */
	atomic_fetch_add(&st->open_txns, 1);
	rc = mdb_txn_begin(st->env, NULL, flags, &t->txn);
	if (rc == MDB_MAP_RESIZED) {
		atomic_fetch_sub(&st->open_txns, 1);
		if (store_adopt_map_size(st))
			log_info("store: adopted the map size another process set");
		atomic_fetch_add(&st->open_txns, 1);
		rc = mdb_txn_begin(st->env, NULL, flags, &t->txn);
		if (rc == MDB_MAP_RESIZED) {
			/* Our own transactions still hold the old map: retry once
			 * they have ended. */
			atomic_fetch_sub(&st->open_txns, 1);
			free(t);
			return -EAGAIN;
		}
	}
	if (rc != MDB_SUCCESS) {
		atomic_fetch_sub(&st->open_txns, 1);
		free(t);
		return store__error(rc, "begin");
	}
	rc = store__reserve_space(t, 0);
	if (rc != 0) {
		store_txn_abort(t);
		return rc;
	}
	*out = t;
	return 0;
}

int store_txn_commit(store_txn *t)
{
	size_t id = mdb_txn_id(t->txn);
	MDB_envinfo info;
	int rc = mdb_txn_commit(t->txn);

	/* Through the writable map, LMDB writes the new meta page into the map
	 * before it syncs it: when that last sync fails (EIO), readers already
	 * see the transaction and nothing can take it back. Reporting a failure
	 * then would make the caller retry a change that is already live (a
	 * second post); it is a success whose durability is unknown. */
	if (rc != 0 && t->write && mdb_env_info(t->st->env, &info) == 0 &&
	    info.me_last_txnid == id) {
		log_error("store: commit: transaction %zu is visible, but syncing it failed (%s): "
		          "it may not survive a crash; restart the process", id, mdb_strerror(rc));
		rc = 0;
	}
	atomic_fetch_sub(&t->st->open_txns, 1);
	free(t);
	return store__error(rc, "commit");
}

void store_txn_abort(store_txn *t)
{
	store_reader *r;

	if (t == NULL)
		return;
	r = t->reader;
	if (r != NULL && r->n_free < r->keep) {
		/* The snapshot goes; the slot and the memory stay for the next
		 * begin. A reset transaction holds no page of the map, so it
		 * does not count as open for a remap. */
		mdb_txn_reset(t->txn);
		atomic_fetch_sub(&t->st->open_txns, 1);
		t->next_free = r->free;
		r->free = t;
		r->n_free++;
		return;
	}
	mdb_txn_abort(t->txn);
	atomic_fetch_sub(&t->st->open_txns, 1);
	free(t);
}

int store_set_name(store_txn *t, const char *name, const uint8_t hash[STORE_HASH_LEN], int64_t now)
{
	store_name_spec spec = { .variant = { hash } };
	return store_set_name_variants(t, name, &spec, now);
}

int store_set_name_variants(store_txn *t, const char *name, const store_name_spec *spec,
                            int64_t now)
{
	struct name_value nv;
	MDB_val key, val, obj;
	size_t len = strlen(name);
	size_t key_len = spec->surrogate_key ? strlen(spec->surrogate_key) : 0;
	int rc;

	if (len == 0 || len > STORE_NAME_MAX || spec->variant[STORE_ENC_IDENTITY] == NULL ||
	    key_len > STORE_SURROGATE_KEY_MAX)
		return SAYIN_EINVAL;
	memset(&nv, 0, sizeof(nv));
	for (int e = 0; e < STORE_ENC_COUNT; e++) {
		MDB_val hkey = { STORE_HASH_LEN, (void *)spec->variant[e] };
		if (spec->variant[e] == NULL)
			continue;
		/* A name never points at nothing. */
		rc = mdb_get(t->txn, t->st->objects, &hkey, &obj);
		if (rc != MDB_SUCCESS)
			return store__error(rc, "set name: object");
		memcpy(nv.variant[e], spec->variant[e], STORE_HASH_LEN);
		nv.encodings |= 1u << e;
	}
	nv.updated = now;
	nv.key_len = (uint32_t)key_len;
	key.mv_data = (void *)name;
	key.mv_size = len;
	val.mv_size = sizeof(nv) + key_len + 1;
	rc = store__reserve_space(t, 2 * (len + val.mv_size));
	if (rc != 0)
		return rc;
	rc = mdb_put(t->txn, t->st->names, &key, &val, MDB_RESERVE);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "set name");
	memcpy(val.mv_data, &nv, sizeof(nv));
	if (key_len > 0)
		memcpy((char *)val.mv_data + sizeof(nv), spec->surrogate_key, key_len);
	((char *)val.mv_data)[sizeof(nv) + key_len] = '\0';
	return 0;
}

int store_get_name(store_txn *t, const char *name, store_name *out)
{
	struct name_value nv;
	MDB_val key = { strlen(name), (void *)name }, val;
	int rc;

	if (key.mv_size == 0 || key.mv_size > STORE_NAME_MAX)
		return SAYIN_ENOTFOUND;
	rc = mdb_get(t->txn, t->st->names, &key, &val);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "get name");
	if (val.mv_size < sizeof(nv) + 1)
		return SAYIN_ECORRUPT;
	memcpy(&nv, val.mv_data, sizeof(nv));
	if (val.mv_size != sizeof(nv) + nv.key_len + 1 || !(nv.encodings & 1u))
		return SAYIN_ECORRUPT;
	memcpy(out->hash, nv.variant[STORE_ENC_IDENTITY], STORE_HASH_LEN);
	memcpy(out->variant, nv.variant, sizeof(nv.variant));
	out->encodings = nv.encodings;
	out->updated = nv.updated;
	out->surrogate_key = (const char *)val.mv_data + sizeof(nv);
	return 0;
}

static int valid_key(const char *s, size_t max)
{
	size_t len = strlen(s);
	return len > 0 && len <= max;
}

/* An index value: seq big-endian (so values sort by seq), then the id. */
static size_t index_value(uint64_t seq, const char *id, unsigned char *buf)
{
	size_t len = strlen(id);
	for (int i = 7; i >= 0; i--) {
		buf[i] = (unsigned char)(seq & 0xff);
		seq >>= 8;
	}
	memcpy(buf + 8, id, len);
	return 8 + len;
}

int store_put_post(store_txn *t, const char *id, const char *author, uint64_t seq,
                   const void *record, size_t len)
{
	unsigned char ibuf[8 + STORE_ID_MAX];
	MDB_val key = { strlen(id), (void *)id }, val = { len, (void *)record };
	MDB_val akey = { strlen(author), (void *)author }, ival;
	int rc;

	if (!valid_key(id, STORE_ID_MAX) || !valid_key(author, STORE_HANDLE_MAX))
		return SAYIN_EINVAL;
	rc = store__reserve_space(t, 2 * (key.mv_size + len + akey.mv_size + sizeof(ibuf)));
	if (rc != 0)
		return rc;
	rc = mdb_put(t->txn, t->st->posts, &key, &val, MDB_NOOVERWRITE);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "put post");
	ival.mv_size = index_value(seq, id, ibuf);
	ival.mv_data = ibuf;
	rc = mdb_put(t->txn, t->st->author_posts, &akey, &ival, MDB_NODUPDATA);
	return store__error(rc, "index post");
}

int store_get_post(store_txn *t, const char *id, const void **record, size_t *len)
{
	MDB_val key = { strlen(id), (void *)id }, val;
	int rc;

	if (!valid_key(id, STORE_ID_MAX))
		return SAYIN_ENOTFOUND;
	rc = mdb_get(t->txn, t->st->posts, &key, &val);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "get post");
	*record = val.mv_data;
	*len = val.mv_size;
	return 0;
}

int store_delete_post(store_txn *t, const char *id, const char *author, uint64_t seq)
{
	unsigned char ibuf[8 + STORE_ID_MAX];
	MDB_val key = { strlen(id), (void *)id }, akey = { strlen(author), (void *)author }, ival;
	int rc;

	if (!valid_key(id, STORE_ID_MAX) || !valid_key(author, STORE_HANDLE_MAX))
		return SAYIN_ENOTFOUND;
	rc = mdb_del(t->txn, t->st->posts, &key, NULL);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "delete post");
	ival.mv_size = index_value(seq, id, ibuf);
	ival.mv_data = ibuf;
	rc = mdb_del(t->txn, t->st->author_posts, &akey, &ival);
	/* A record without its index entry means the caller's seq is wrong:
	 * the transaction must not commit. */
	return rc == MDB_NOTFOUND ? SAYIN_ECORRUPT : store__error(rc, "unindex post");
}

static uint64_t index_seq(const MDB_val *v)
{
	const unsigned char *p = v->mv_data;
	uint64_t seq = 0;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | p[i];
	return seq;
}

/* Walks the index from the cursor's position towards older posts. */
static int walk_posts(store_txn *t, MDB_cursor *cur, MDB_val *akey, MDB_val *iv, int rc,
                      uint64_t seq_lo, size_t limit, store_post_fn fn, void *arg)
{
	char idbuf[STORE_ID_MAX + 1];
	size_t seen = 0;
	int stop = 0;

	while (rc == MDB_SUCCESS && (limit == 0 || seen < limit)) {
		MDB_val id, val;
		uint64_t seq;
		if (iv->mv_size <= 8 || iv->mv_size > 8 + STORE_ID_MAX) {
			stop = SAYIN_ECORRUPT;
			break;
		}
		seq = index_seq(iv);
		if (seq < seq_lo)
			break;
		id.mv_size = iv->mv_size - 8;
		id.mv_data = (char *)iv->mv_data + 8;
		memcpy(idbuf, id.mv_data, id.mv_size);
		idbuf[id.mv_size] = '\0';
		rc = mdb_get(t->txn, t->st->posts, &id, &val);
		if (rc != MDB_SUCCESS) {
			stop = rc == MDB_NOTFOUND ? SAYIN_ECORRUPT : store__error(rc, "get post");
			break;
		}
		stop = fn(arg, idbuf, seq, val.mv_data, val.mv_size);
		if (stop != 0)
			break;
		seen++;
		rc = mdb_cursor_get(cur, akey, iv, MDB_PREV_DUP);
	}
	if (stop != 0)
		return stop;
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return store__error(rc, "walk posts");
	return 0;
}

int store_author_posts_range(store_txn *t, const char *author, uint64_t seq_hi, uint64_t seq_lo,
                             size_t limit, store_post_fn fn, void *arg)
{
	unsigned char probe[8];
	MDB_cursor *cur;
	MDB_val akey = { strlen(author), (void *)author }, iv;
	int rc;

	if (!valid_key(author, STORE_HANDLE_MAX))
		return SAYIN_EINVAL;
	if (seq_hi < seq_lo)
		return 0;
	rc = mdb_cursor_open(t->txn, t->st->author_posts, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = mdb_cursor_get(cur, &akey, &iv, MDB_SET);
	if (rc == MDB_SUCCESS && seq_hi == UINT64_MAX) {
		rc = mdb_cursor_get(cur, &akey, &iv, MDB_LAST_DUP);
	} else if (rc == MDB_SUCCESS) {
		/* The first entry past seq_hi (any id sorts after the bare
		 * 8-byte prefix), then one step back; none past it: the last. */
		index_value(seq_hi + 1, "", probe);
		iv.mv_size = sizeof(probe);
		iv.mv_data = probe;
		rc = mdb_cursor_get(cur, &akey, &iv, MDB_GET_BOTH_RANGE);
		if (rc == MDB_SUCCESS)
			rc = mdb_cursor_get(cur, &akey, &iv, MDB_PREV_DUP);
		else if (rc == MDB_NOTFOUND)
			rc = mdb_cursor_get(cur, &akey, &iv, MDB_LAST_DUP);
	}
	rc = walk_posts(t, cur, &akey, &iv, rc, seq_lo, limit, fn, arg);
	mdb_cursor_close(cur);
	return rc;
}

int store_author_posts(store_txn *t, const char *author, size_t limit, store_post_fn fn, void *arg)
{
	return store_author_posts_range(t, author, UINT64_MAX, 0, limit, fn, arg);
}

/* How many values a dupsort table holds under key (0 when none); what
 * names the count in LMDB's error. */
static int count_values(store_txn *t, MDB_dbi dbi, MDB_val *key, const char *what, size_t *count)
{
	MDB_cursor *cur;
	MDB_val val;
	size_t n = 0;
	int rc = mdb_cursor_open(t->txn, dbi, &cur);

	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = mdb_cursor_get(cur, key, &val, MDB_SET);
	if (rc == MDB_SUCCESS)
		rc = mdb_cursor_count(cur, &n);
	mdb_cursor_close(cur);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return store__error(rc, what);
	*count = n;
	return 0;
}

int store_author_post_count(store_txn *t, const char *author, size_t *count)
{
	MDB_val akey = { strlen(author), (void *)author };
	return count_values(t, t->st->author_posts, &akey, "count posts", count);
}

int store_put_author(store_txn *t, const char *handle, const void *record, size_t len)
{
	if (!valid_key(handle, STORE_HANDLE_MAX))
		return SAYIN_EINVAL;
	return store_put_record(t, STORE_AUTHORS, handle, record, len);
}

int store_get_author(store_txn *t, const char *handle, const void **record, size_t *len)
{
	if (!valid_key(handle, STORE_HANDLE_MAX))
		return SAYIN_ENOTFOUND;
	return store_get_record(t, STORE_AUTHORS, handle, record, len);
}

int store_ref_add(store_txn *t, const uint8_t hash[STORE_HASH_LEN], const char *post_id)
{
	MDB_val key = { STORE_HASH_LEN, (void *)hash }, val = { strlen(post_id), (void *)post_id };
	int rc;

	if (!valid_key(post_id, STORE_ID_MAX))
		return SAYIN_EINVAL;
	rc = store__reserve_space(t, 2 * (key.mv_size + val.mv_size));
	if (rc != 0)
		return rc;
	rc = mdb_put(t->txn, t->st->refs, &key, &val, MDB_NODUPDATA);
	return rc == MDB_KEYEXIST ? 0 : store__error(rc, "add reference");
}

int store_ref_remove(store_txn *t, const uint8_t hash[STORE_HASH_LEN], const char *post_id,
                     size_t *remaining)
{
	MDB_val key = { STORE_HASH_LEN, (void *)hash }, val = { strlen(post_id), (void *)post_id };
	int rc = mdb_del(t->txn, t->st->refs, &key, &val);

	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return store__error(rc, "remove reference");
	return count_values(t, t->st->refs, &key, "count references", remaining);
}

int store_delete_name(store_txn *t, const char *name)
{
	MDB_val key = { strlen(name), (void *)name };
	if (!valid_key(name, STORE_NAME_MAX))
		return SAYIN_ENOTFOUND;
	return store__error(mdb_del(t->txn, t->st->names, &key, NULL), "delete name");
}

static int table_key(store_txn *t, enum store_table table, const char *key, MDB_val *out)
{
	if ((unsigned)table >= STORE_TABLE_COUNT || !valid_key(key, STORE_NAME_MAX))
		return SAYIN_EINVAL;
	if (t->st->tables[table] == DBI_ABSENT)
		return SAYIN_ENOTFOUND;
	out->mv_size = strlen(key);
	out->mv_data = (void *)key;
	return 0;
}

int store_put_record(store_txn *t, enum store_table table, const char *key, const void *record,
                     size_t len)
{
	MDB_val k, val = { len, (void *)record };
	int rc = table_key(t, table, key, &k);
	if (rc == 0)
		rc = store__reserve_space(t, 2 * (k.mv_size + len));
	if (rc != 0)
		return rc;
	return store__error(mdb_put(t->txn, t->st->tables[table], &k, &val, 0), "put record");
}

int store_get_record(store_txn *t, enum store_table table, const char *key, const void **record,
                     size_t *len)
{
	MDB_val k, val;
	int rc = table_key(t, table, key, &k);
	if (rc != 0)
		return rc == SAYIN_EINVAL ? SAYIN_ENOTFOUND : rc;
	rc = mdb_get(t->txn, t->st->tables[table], &k, &val);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "get record");
	*record = val.mv_data;
	*len = val.mv_size;
	return 0;
}

int store_delete_record(store_txn *t, enum store_table table, const char *key)
{
	MDB_val k;
	int rc = table_key(t, table, key, &k);
	if (rc != 0)
		return rc == SAYIN_EINVAL ? SAYIN_ENOTFOUND : rc;
	return store__error(mdb_del(t->txn, t->st->tables[table], &k, NULL), "delete record");
}

/* Tombstones live in the meta table under "gone " + path: a marker, not a
 * table of its own, so the store's format is unchanged (an older program
 * simply answers 404 where this one answers 410). */
#define GONE_PREFIX "gone "

static int gone_key(char *buf, size_t size, const char *path, size_t len)
{
	if (len == 0 || path[0] != '/' || len + sizeof(GONE_PREFIX) > size)
		return SAYIN_EINVAL;
	memcpy(buf, GONE_PREFIX, sizeof(GONE_PREFIX) - 1);
	memcpy(buf + sizeof(GONE_PREFIX) - 1, path, len);
	buf[sizeof(GONE_PREFIX) - 1 + len] = '\0';
	return 0;
}

int store_put_gone(store_txn *t, const char *path, int64_t now)
{
	char key[STORE_NAME_MAX + 1], rec[32];
	int rc = gone_key(key, sizeof(key), path, strlen(path));
	int n = snprintf(rec, sizeof(rec), "%lld", (long long)now);

	if (rc != 0)
		return rc;
	return store_put_record(t, STORE_META, key, rec, (size_t)n);
}

int store_delete_gone(store_txn *t, const char *path)
{
	char key[STORE_NAME_MAX + 1];
	int rc = gone_key(key, sizeof(key), path, strlen(path));
	return rc != 0 ? SAYIN_ENOTFOUND : store_delete_record(t, STORE_META, key);
}

int store_find_gone(store_txn *t, const char *path)
{
	char key[STORE_NAME_MAX + 1];
	size_t len = strlen(path);
	const void *rec;
	size_t rlen;

	/* Each whole-segment prefix: "/p/ID/embed" tries "/p", "/p/ID" and
	 * itself. At most a few lookups, and only on a miss. */
	for (size_t end = 1; end <= len; end++) {
		if (end < len && path[end] != '/')
			continue;
		if (gone_key(key, sizeof(key), path, end) != 0)
			return SAYIN_ENOTFOUND;
		int rc = store_get_record(t, STORE_META, key, &rec, &rlen);
		if (rc != SAYIN_ENOTFOUND)
			return rc;
	}
	return SAYIN_ENOTFOUND;
}

int store_each_record(store_txn *t, enum store_table table, const char *prefix,
                      store_record_fn fn, void *arg)
{
	char keybuf[STORE_NAME_MAX + 1];
	size_t plen = strlen(prefix);
	MDB_cursor *cur;
	MDB_val k = { plen, (void *)prefix }, val;
	int rc, stop = 0;

	if ((unsigned)table >= STORE_TABLE_COUNT)
		return SAYIN_EINVAL;
	if (t->st->tables[table] == DBI_ABSENT)
		return 0;
	rc = mdb_cursor_open(t->txn, t->st->tables[table], &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = plen > 0 ? mdb_cursor_get(cur, &k, &val, MDB_SET_RANGE)
	              : mdb_cursor_get(cur, &k, &val, MDB_FIRST);
	while (rc == MDB_SUCCESS) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0)
			break;
		if (k.mv_size > STORE_NAME_MAX) {
			stop = SAYIN_ECORRUPT;
			break;
		}
		memcpy(keybuf, k.mv_data, k.mv_size);
		keybuf[k.mv_size] = '\0';
		stop = fn(arg, keybuf, val.mv_data, val.mv_size);
		if (stop != 0)
			break;
		/* fn may have deleted this record: MDB_SET_RANGE finds the next
		 * key from a copy, whatever the cursor's state. */
		k.mv_size = strlen(keybuf) + 1;
		keybuf[k.mv_size - 1] = '\0';
		k.mv_data = keybuf;
		rc = mdb_cursor_get(cur, &k, &val, MDB_SET_RANGE);
	}
	mdb_cursor_close(cur);
	if (stop != 0)
		return stop;
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return store__error(rc, "walk records");
	return 0;
}

int store_stats_get(store_txn *t, store_stats *out)
{
	MDB_envinfo info;
	MDB_stat env_stat, s;
	int rc;

	mdb_env_info(t->st->env, &info);
	mdb_env_stat(t->st->env, &env_stat);
	out->map_size = info.me_mapsize;
	out->map_used = (uint64_t)(info.me_last_pgno + 1) * env_stat.ms_psize;
	rc = mdb_stat(t->txn, t->st->objects, &s);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "stat");
	out->objects = s.ms_entries;
	rc = mdb_stat(t->txn, t->st->names, &s);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "stat");
	out->names = s.ms_entries;
	rc = mdb_stat(t->txn, t->st->posts, &s);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "stat");
	out->posts = s.ms_entries;
	return 0;
}

const char *store_lmdb_version(void)
{
	return mdb_version(NULL, NULL, NULL);
}

int store_format_version(store_txn *t, unsigned *out)
{
	return read_format(t->txn, t->st, out);
}

int store_migrate(store *st, unsigned *from)
{
	char v[16];
	MDB_val k = { strlen(STORE_FORMAT_KEY), (void *)STORE_FORMAT_KEY }, val;
	store_txn *t;
	int rc = store_txn_begin(st, 1, &t);

	if (rc != 0)
		return rc;
	rc = read_format(t->txn, st, from);
	if (rc == 0 && *from > STORE_FORMAT_VERSION)
		rc = SAYIN_ESTORENEWER;
	if (rc != 0 || *from == STORE_FORMAT_VERSION) {
		store_txn_abort(t);
		return rc;
	}
	/* 1 -> 2: the format record. The site identity (meta "site") is the
	 * publisher's to record: by `site init` or its first publish. Later
	 * steps go here, each from the version the previous one left. */
	val.mv_size = (size_t)snprintf(v, sizeof(v), "%u", STORE_FORMAT_VERSION);
	val.mv_data = v;
	rc = store__reserve_space(t, 2 * (k.mv_size + val.mv_size));
	if (rc == 0)
		rc = store__error(mdb_put(t->txn, st->tables[STORE_META], &k, &val, 0), "record format");
	if (rc != 0) {
		store_txn_abort(t);
		return rc;
	}
	rc = store_txn_commit(t);
	if (rc == 0)
		log_info("store: migrated from format %u to %u", *from, STORE_FORMAT_VERSION);
	return rc;
}

/* mdb_reader_list passes a header line, then one line per slot taken (a
 * process's pid in it), or "(no active readers)". */
static int count_reader_line(const char *msg, void *ctx)
{
	unsigned *n = ctx;

	if (msg[0] != '(' && strncmp(msg, "    pid", 7) != 0)
		(*n)++;
	return 0;
}

int store_readers(store *st, unsigned *used, unsigned *max)
{
	unsigned n = 0, limit = 0;
	int rc = mdb_env_get_maxreaders(st->env, &limit);

	if (rc != MDB_SUCCESS)
		return store__error(rc, "reader limit");
	rc = mdb_reader_list(st->env, count_reader_line, &n);
	if (rc < 0)
		return store__error(rc, "reader list");
	*used = n;
	*max = limit;
	return 0;
}

static double gauge_map(void *arg, int used)
{
	store *st = arg;
	MDB_envinfo info;
	MDB_stat env_stat;

	if (mdb_env_info(st->env, &info) != MDB_SUCCESS ||
	    mdb_env_stat(st->env, &env_stat) != MDB_SUCCESS)
		return NAN;
	if (!used)
		return (double)info.me_mapsize;
	return (double)(info.me_last_pgno + 1) * (double)env_stat.ms_psize;
}

static double gauge_map_used(void *arg)
{
	return gauge_map(arg, 1);
}

static double gauge_map_size(void *arg)
{
	return gauge_map(arg, 0);
}

static double gauge_readers(void *arg, int used)
{
	unsigned n = 0, max = 0;

	if (store_readers(arg, &n, &max) != 0)
		return NAN;
	return used ? (double)n : (double)max;
}

static double gauge_readers_used(void *arg)
{
	return gauge_readers(arg, 1);
}

static double gauge_readers_max(void *arg)
{
	return gauge_readers(arg, 0);
}

int store_metrics_define(metrics *m, store *st)
{
	metrics_id id = metrics_gauge_fn(m, "sayin_store_map_size_bytes",
	                                 "LMDB map size: the most the store may hold.", NULL,
	                                 gauge_map_size, st);
	if (id >= 0)
		id = metrics_gauge_fn(m, "sayin_store_map_used_bytes", "Bytes of the LMDB map in use.",
		                      NULL, gauge_map_used, st);
	if (id >= 0)
		id = metrics_gauge_fn(m, "sayin_store_readers_used",
		                      "LMDB reader slots taken now, by every process with the store open.",
		                      NULL, gauge_readers_used, st);
	if (id >= 0)
		id = metrics_gauge_fn(m, "sayin_store_readers_max",
		                      "LMDB reader slots in the lock file: readers beyond wait or fail.",
		                      NULL, gauge_readers_max, st);
	return id < 0 ? id : 0;
}
