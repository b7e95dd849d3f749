/* store_backup: snapshots of a store (a consistent, compacted copy in one
 * file), their verification, restoring one into a store directory, and the
 * walks `sayin-publisher fsck` makes over every table. Part of the store:
 * the only other file that touches LMDB.
 *
 * A snapshot is ONE file: LMDB's data file of a compacted copy (what
 * `mdb_copy -c -n` writes), no lock file. It is opened read-only without a
 * lock (nobody writes a snapshot), so reading one never creates a file next
 * to it. restore installs it as DIR/data.mdb.
 *
 * Threading: the main thread of a command. Errors as in store.h, plus
 * -EBUSY (the store is in use), -ENOTEMPTY (the directory holds a store). */
#ifndef SAYIN_STORE_BACKUP_H
#define SAYIN_STORE_BACKUP_H

#include "core/store.h"

#include <stdint.h>
#include <sys/types.h>

typedef struct store_snapshot_info {
	uint64_t bytes;      /* the snapshot file's size */
	uint64_t entries;    /* entries of every named table together */
	unsigned tables;     /* named tables */
	/* The source's last committed transaction when the copy began and
	 * when it ended; equal means the copy is exactly that state, and its
	 * entry counts were compared table by table. */
	uint64_t txn_before, txn_after;
	int counts_compared;
} store_snapshot_info;

/* Writes a compacted copy of st (mdb_env_copyfd2 with MDB_CP_COMPACT, taken
 * in a read transaction: writers go on meanwhile) to a temporary file next
 * to dest (dest + ".tmp-XXXXXX"), fsyncs it, verifies it as
 * store_snapshot_verify does, and, when the source did not change during
 * the copy, that every table holds as many entries as the source's; then
 * renames it to dest and fsyncs the directory. dest is replaced whole or
 * not at all; on any failure the temporary file is removed. Returns 0,
 * -errno (-ENOSPC, -EFBIG, -EACCES...), SAYIN_ECORRUPT (the copy does not
 * verify; err says why) or SAYIN_ESTORE. err (may be NULL) gets one line. */
int store_snapshot(store *st, const char *dest, store_snapshot_info *out, char *err,
                   size_t errlen);

/* Checks that the file is a whole LMDB data file: not shorter than its last
 * page, every named table walked from first to last entry with every value
 * read (which reads every page), and the entries found equal to the
 * table's own count. Returns 0, -ENOENT, SAYIN_ECORRUPT (err says what) or
 * another error. */
int store_snapshot_verify(const char *path, store_snapshot_info *out, char *err, size_t errlen);

/* Opens a snapshot as a read-only store (store_close frees it), to read it
 * with the store's functions, e.g. fsck. Returns 0, -ENOENT,
 * SAYIN_ECORRUPT or SAYIN_ESTORE. */
int store_snapshot_open(const char *path, store **out);

/* 0 when no process has the store in dir open, -EBUSY (*pid, when not
 * NULL, is one that has), or -errno. LMDB holds a shared lock on its lock
 * file's first byte for as long as a process has the environment open. */
int store_in_use(const char *dir, pid_t *pid);

/* Installs the snapshot src as the store in dir (created 0750 if absent):
 * verifies src, refuses a store in use (-EBUSY, *pid as store_in_use) and,
 * unless force, a directory holding anything but a lock file
 * (-ENOTEMPTY); copies src to a temporary file in dir, fsyncs and verifies
 * it, renames it to dir/data.mdb and fsyncs dir. The lock file stays
 * exclusively locked meanwhile, so a process starting then waits. On any
 * failure dir is as it was. */
int store_restore(const char *src, const char *dir, int force, pid_t *pid,
                  store_snapshot_info *out, char *err, size_t errlen);

/* Walks for fsck, in key order, within txn. fn returns 0 to go on; any
 * other value stops the walk and is returned. Pointers are valid only
 * during the call. A value the walk cannot decode is passed with
 * status = SAYIN_ECORRUPT (the other fields are then zero). */
typedef int (*store_walk_post_fn)(void *arg, const char *id, const void *record, size_t len);
int store_walk_posts(store_txn *txn, store_walk_post_fn fn, void *arg);

typedef int (*store_walk_index_fn)(void *arg, int status, const char *author, uint64_t seq,
                                   const char *id);
int store_walk_index(store_txn *txn, store_walk_index_fn fn, void *arg);

/* status: 0, or SAYIN_ECORRUPT for a name value that does not decode. */
typedef int (*store_walk_name_fn)(void *arg, int status, const char *name,
                                  const store_name *value);
int store_walk_names(store_txn *txn, store_walk_name_fn fn, void *arg);

/* status: 0, or SAYIN_ECORRUPT for a value whose header does not decode
 * (obj->data is then NULL). */
typedef int (*store_walk_object_fn)(void *arg, int status, const uint8_t hash[STORE_HASH_LEN],
                                    const store_object *obj);
int store_walk_objects(store_txn *txn, store_walk_object_fn fn, void *arg);

typedef int (*store_walk_ref_fn)(void *arg, const uint8_t hash[STORE_HASH_LEN],
                                 const char *post_id);
int store_walk_refs(store_txn *txn, store_walk_ref_fn fn, void *arg);

/* 0 if the reference (hash, post_id) exists, else SAYIN_ENOTFOUND. */
int store_ref_exists(store_txn *txn, const uint8_t hash[STORE_HASH_LEN], const char *post_id);
/* References to hash (0 when none). */
int store_ref_count(store_txn *txn, const uint8_t hash[STORE_HASH_LEN], size_t *count);
/* 0 if author's index holds (seq, id), else SAYIN_ENOTFOUND. */
int store_index_exists(store_txn *txn, const char *author, uint64_t seq, const char *id);

#endif
