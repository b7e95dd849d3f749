/* store: the one module that touches LMDB. One environment (a directory),
 * named databases for content-addressed objects, names (mutable pointers to
 * objects, like git refs), posts, the per-author post index, object
 * references, and small keyed tables: authors, API tokens, idempotency keys.
 *
 * Transactions: everything happens inside a store_txn. A write transaction is
 * all-or-nothing: readers see all of it after store_txn_commit() or none of
 * it. LMDB allows one writer (process or thread) at a time: store_txn_begin
 * for writing blocks until the current writer finishes. Readers never block
 * and see every commit made before their transaction began.
 *
 * Threading: a store may be shared by threads; a store_txn belongs to the
 * thread that began it (read transactions may be carried across callbacks on
 * that thread: the store is opened with MDB_NOTLS).
 *
 * Lifetimes: every pointer the store returns into its data (object bytes,
 * content types, records) points into LMDB's memory map and is valid ONLY
 * until its transaction ends (commit, abort, or a write in the same write
 * transaction). Never free these pointers.
 *
 * Memory and disk: writers open the environment with MDB_WRITEMAP, and object
 * bytes go into the data file by pwrite, not through the map, so a write
 * transaction's memory does not grow with what it stores. Because a page
 * written through a map where the disk has no room raises SIGBUS, every
 * write first allocates the blocks it may need (fallocate): a full disk is
 * -ENOSPC from the write, and the transaction can only be aborted. The data
 * file's apparent size is the map size (it is sparse).
 *
 * Errors: 0 on success; SAYIN_ENOTFOUND, SAYIN_ESTOREFULL, SAYIN_EREADONLY,
 * SAYIN_EREADERS, SAYIN_ECORRUPT, SAYIN_EINVAL, SAYIN_ESTORE (LMDB's own
 * message is logged) or a negative errno. After an error inside a write
 * transaction the transaction can only be aborted. */
#ifndef SAYIN_STORE_H
#define SAYIN_STORE_H

#include <stddef.h>
#include <stdint.h>

#define STORE_HASH_LEN 32        /* SHA-256 */
#define STORE_HASH_HEX_LEN 64
#define STORE_CTYPE_MAX 47       /* longest content type an object may record */
#define STORE_DEFAULT_MAP_SIZE (64ull << 30) /* 64 GiB of address space, not disk */

/* The store's format version, recorded in the meta table under "format"
 * (decimal text). A store without that record is format 1: what every
 * publisher wrote before the record existed. Format 2 adds the record
 * itself and the site identity (publisher/site.h, meta "site"); nothing
 * else in the layout differs. store_open refuses a store of another
 * format (see store_options.any_format); store_migrate brings an older
 * one up to this version. */
#define STORE_FORMAT_VERSION 2u
#define STORE_FORMAT_KEY "format"

typedef struct store store;
typedef struct store_txn store_txn;

typedef struct store_options {
	uint64_t map_size;  /* bytes; 0 = keep the environment's current size, or the default */
	int read_only;      /* open with MDB_RDONLY: no write transaction can ever begin */
	unsigned max_readers; /* concurrent read transactions; 0 = 4096 */
	int any_format;     /* 1: open a store of an older format too (migrate, inspection) */
} store_options;

/* Opens (and, unless read_only, creates) the environment in dir. A new
 * store (no table in it yet) is created at STORE_FORMAT_VERSION.
 * Returns 0 and *out, or -ENOENT (read_only and no store there), -EACCES,
 * SAYIN_ESTORE, SAYIN_ESTORENEWER (the store's format is newer than
 * STORE_FORMAT_VERSION: always refused, this program would misread it) or
 * SAYIN_ESTOREOLDER (older, and opt->any_format is 0). The format's error
 * is logged with both versions. */
int store_open(const char *dir, const store_options *opt, store **out);
void store_close(store *st);

/* Begins a transaction. A read-only store refuses write = 1 with
 * SAYIN_EREADONLY. Returns SAYIN_EREADERS when the reader table is full, and
 * -EAGAIN when another process grew the map while transactions of this
 * process still hold the old one (retry once they have ended). */
int store_txn_begin(store *st, int write, store_txn **out);
/* Commits and frees txn. On failure (e.g. SAYIN_ESTOREFULL) nothing of the
 * transaction is visible, and txn is freed all the same. A commit whose
 * final sync failed after it became visible returns 0 (it cannot be taken
 * back) and logs an error: its durability is unknown. */
int store_txn_commit(store_txn *txn);
/* Discards and frees txn (a reader's goes back to it, reset). */
void store_txn_abort(store_txn *txn);

/* A cache of read transactions for one thread, e.g. one event loop, which
 * begins one per request. Ending one resets it (mdb_txn_reset: the
 * snapshot is let go, the reader slot and the allocation are kept) and the
 * next begin renews it (mdb_txn_renew) on the newest commit, instead of a
 * malloc and a search of the reader table under its mutex each time. Slots
 * of cached transactions count as used in store_readers.
 *
 * Every function of a reader, and store_txn_abort of its transactions,
 * must be called on one thread. */
typedef struct store_reader store_reader;

/* keep: transactions kept for reuse at most (beyond, they are freed).
 * Returns 0 or -ENOMEM. */
int store_reader_new(store *st, unsigned keep, store_reader **out);
/* As store_txn_begin(st, 0, out), through the cache. */
int store_reader_begin(store_reader *r, store_txn **out);
/* Frees the cache. Every transaction begun through r must have ended. */
void store_reader_free(store_reader *r);

typedef struct store_object {
	uint8_t hash[STORE_HASH_LEN];
	const void *data;          /* points into the map: valid until the txn ends */
	uint64_t size;
	const char *content_type;  /* likewise */
	int64_t created;           /* unix seconds */
} store_object;

/* Stores bytes under their SHA-256 (written to hash_out). If an object with
 * that hash exists it is kept as it is (identical bytes are stored once) and
 * *is_new (if not NULL) is set to 0. content_type must be at most
 * STORE_CTYPE_MAX bytes. */
int store_put_object(store_txn *txn, const void *bytes, size_t len, const char *content_type,
                     int64_t now, uint8_t hash_out[STORE_HASH_LEN], int *is_new);
/* The same with the bytes in a file: len bytes of fd from offset 0 (the
 * file's own offset is not used or moved). They are hashed in one pass and
 * copied into the data file by the kernel (copy_file_range), so storing an
 * object costs no memory for its bytes, however long it is. -EIO if the
 * file holds fewer than len bytes. */
int store_put_object_file(store_txn *txn, int fd, uint64_t len, const char *content_type,
                          int64_t now, uint8_t hash_out[STORE_HASH_LEN], int *is_new);
/* Removes an object. The caller guarantees no name or post still refers to
 * it. SAYIN_ENOTFOUND if absent. */
int store_delete_object(store_txn *txn, const uint8_t hash[STORE_HASH_LEN]);
/* Looks an object up by hash; SAYIN_ENOTFOUND if absent. */
int store_get_object(store_txn *txn, const uint8_t hash[STORE_HASH_LEN], store_object *out);

/* Encodings a name may carry besides identity (precompressed at publish). */
enum store_encoding { STORE_ENC_IDENTITY, STORE_ENC_GZIP, STORE_ENC_BR, STORE_ENC_COUNT };
#define STORE_SURROGATE_KEY_MAX 255

typedef struct store_name {
	uint8_t hash[STORE_HASH_LEN]; /* the identity object the name points at */
	/* hashes by enum store_encoding; [STORE_ENC_IDENTITY] equals hash */
	uint8_t variant[STORE_ENC_COUNT][STORE_HASH_LEN];
	unsigned encodings;           /* bit (1u << enc) set for each variant present */
	int64_t updated;              /* unix seconds of the last store_set_name* */
	const char *surrogate_key;    /* space-separated purge keys, "" if none;
	                                 points into the map: valid until the txn ends */
} store_name;

typedef struct store_name_spec {
	/* by enum store_encoding; identity is required, others may be NULL */
	const uint8_t *variant[STORE_ENC_COUNT];
	const char *surrogate_key;    /* NULL or at most STORE_SURROGATE_KEY_MAX bytes */
} store_name_spec;

/* Points name (a URL path such as "/u/demo/feed.json", at most 400 bytes) at
 * an existing object, with no other encoding and no surrogate key.
 * SAYIN_ENOTFOUND if the object is absent. */
int store_set_name(store_txn *txn, const char *name, const uint8_t hash[STORE_HASH_LEN],
                   int64_t now);
/* The same with encoded variants and surrogate keys. Every variant must be a
 * stored object (SAYIN_ENOTFOUND otherwise); SAYIN_EINVAL for a missing
 * identity or an over-long key. */
int store_set_name_variants(store_txn *txn, const char *name, const store_name_spec *spec,
                            int64_t now);
int store_get_name(store_txn *txn, const char *name, store_name *out);

/* Post records are opaque bytes to the store (JSON to the publisher). Post ids
 * sort in time order; seq is the post's number in its author's sequence
 * (1, 2, ...; never reused, so a deleted post leaves a gap), which the
 * feed's pages are cut by. store_put_post also indexes the post under its
 * author by seq. Creating an id that exists fails with -EEXIST. */
int store_put_post(store_txn *txn, const char *id, const char *author, uint64_t seq,
                   const void *record, size_t len);
int store_get_post(store_txn *txn, const char *id, const void **record, size_t *len);
/* Removes the post and its index entry (author and seq must be the ones it
 * was put with). SAYIN_ENOTFOUND if absent. Its objects and names are the
 * caller's business (see store_ref_remove). */
int store_delete_post(store_txn *txn, const char *id, const char *author, uint64_t seq);

/* Calls fn for the author's posts, newest (highest seq) first, at most limit
 * of them (0 = all). fn returns 0 to go on, anything else to stop; that
 * value is then returned. Records are valid only during the call. */
typedef int (*store_post_fn)(void *arg, const char *id, uint64_t seq, const void *record,
                             size_t len);
int store_author_posts(store_txn *txn, const char *author, size_t limit, store_post_fn fn,
                       void *arg);
/* The same for the posts whose seq is in [seq_lo, seq_hi], newest first.
 * Costs O(log n + posts visited), whatever the author's post count. */
int store_author_posts_range(store_txn *txn, const char *author, uint64_t seq_hi,
                             uint64_t seq_lo, size_t limit, store_post_fn fn, void *arg);
/* Number of posts indexed under author. */
int store_author_post_count(store_txn *txn, const char *author, size_t *count);

/* Author records: opaque bytes keyed by handle. */
int store_put_author(store_txn *txn, const char *handle, const void *record, size_t len);
int store_get_author(store_txn *txn, const char *handle, const void **record, size_t *len);

/* Object references: which posts use an object. Objects are shared by
 * identical bytes, so a deleted post's audio is deleted only when no other
 * post refers to it. Adding a reference that exists is a no-op.
 * store_ref_remove sets *remaining to the references left. */
int store_ref_add(store_txn *txn, const uint8_t hash[STORE_HASH_LEN], const char *post_id);
int store_ref_remove(store_txn *txn, const uint8_t hash[STORE_HASH_LEN], const char *post_id,
                     size_t *remaining);

/* Removes a name (not its objects). SAYIN_ENOTFOUND if absent. */
int store_delete_name(store_txn *txn, const char *name);

/* Small keyed tables of opaque records (JSON to the publisher). Keys are 1 to
 * 400 bytes. */
enum store_table {
	STORE_AUTHORS,     /* handle -> author record (as store_put_author) */
	STORE_TOKENS,      /* token id -> token record (hash of the secret, handle) */
	STORE_IDEMPOTENCY, /* handle "\n" key -> the first response */
	STORE_OUTBOX,      /* job id (20 digits, in enqueue order) -> delivery job */
	STORE_META,        /* counters and markers, e.g. the outbox's next job id */
	STORE_CROSSPOSTS,  /* post id "\n" network -> the remote post (id, url) */
	STORE_TABLE_COUNT
};
int store_put_record(store_txn *txn, enum store_table table, const char *key, const void *record,
                     size_t len);
int store_get_record(store_txn *txn, enum store_table table, const char *key, const void **record,
                     size_t *len);
/* SAYIN_ENOTFOUND if absent. */
int store_delete_record(store_txn *txn, enum store_table table, const char *key);
/* Calls fn for each record whose key starts with prefix ("" = all), in key
 * order; fn's return value stops the walk as in store_author_posts. Deleting
 * the record fn was given, inside fn, is allowed. */
typedef int (*store_record_fn)(void *arg, const char *key, const void *record, size_t len);
int store_each_record(store_txn *txn, enum store_table table, const char *prefix,
                      store_record_fn fn, void *arg);

/* Tombstones: URL paths taken down for good (a removed author's pages and
 * feeds, its posts' pages). A tombstone on "/u/demo" covers that path and
 * every path under it ("/u/demo/", "/u/demo/feed.json"), whole segments
 * only ("/u/demox" is not covered); the origin answers 410 Gone for a
 * covered path that has no name. Kept in the meta table (the format is
 * unchanged). store_put_gone: path starts with '/' and is at most 395
 * bytes (SAYIN_EINVAL otherwise); putting one that exists is a no-op.
 * store_delete_gone: SAYIN_ENOTFOUND if absent. store_find_gone: 0 when a
 * tombstone covers path, SAYIN_ENOTFOUND when none does, or a store
 * error. */
int store_put_gone(store_txn *txn, const char *path, int64_t now);
int store_delete_gone(store_txn *txn, const char *path);
int store_find_gone(store_txn *txn, const char *path);

typedef struct store_stats {
	uint64_t map_size;    /* bytes reserved for the map */
	uint64_t map_used;    /* bytes of the map in use (last page used) */
	uint64_t objects;
	uint64_t names;
	uint64_t posts;
} store_stats;

int store_stats_get(store_txn *txn, store_stats *out);

/* The format version recorded in the store (1 when there is no record:
 * a store written before versions were recorded). SAYIN_ECORRUPT for a
 * record that is not a number. */
int store_format_version(store_txn *txn, unsigned *out);

/* Brings the store up to STORE_FORMAT_VERSION in one write transaction
 * (nothing changes on error). *from is the version found; a store at the
 * current version is left as it is (0). SAYIN_ESTORENEWER for a newer one.
 * The store must have been opened with any_format. */
int store_migrate(store *st, unsigned *from);

/* Hex helpers for hashes: hex must hold STORE_HASH_HEX_LEN + 1 bytes.
 * store_hash_from_hex returns 0 or SAYIN_EINVAL (lowercase hex only). */
void store_hash_to_hex(const uint8_t hash[STORE_HASH_LEN], char *hex);
int store_hash_from_hex(const char *hex, size_t len, uint8_t hash[STORE_HASH_LEN]);

/* LMDB's version as the linked library reports it (mdb_version), e.g.
 * "LMDB 0.9.24: (July 24, 2019)"; static storage. For --version. */
const char *store_lmdb_version(void);

/* LMDB's reader table: *used slots are taken now, by any process with the
 * store open (a read transaction in progress, or a slot a thread keeps), out
 * of *max (the lock file's size, set by the first opener). O(max): for
 * metrics, not hot paths. Any thread. Returns 0 or a store error. */
int store_readers(store *st, unsigned *used, unsigned *max);

/* Defines the store's gauges on m, read at scrape time (any thread):
 * sayin_store_map_size_bytes, sayin_store_map_used_bytes (the last page
 * used), sayin_store_readers_used and sayin_store_readers_max
 * (store_readers). st must outlive m's renders. Returns 0 or an error from
 * the definers. */
struct metrics;
int store_metrics_define(struct metrics *m, store *st);

#endif
