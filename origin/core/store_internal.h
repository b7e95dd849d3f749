/* store_internal: the store handles' fields and helpers its two files share. */
/* Nothing outside store.c and store_object.c includes it. Include
 * core/store.h first. */
#ifndef SAYIN_STORE_INTERNAL_H
#define SAYIN_STORE_INTERNAL_H

#ifndef SAYIN_STORE_H
#error "include core/store.h before core/store_internal.h"
#endif

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct store {
	MDB_env *env;
	MDB_dbi objects;      /* sha256 -> object_header + bytes */
	MDB_dbi names;        /* path -> name_value */
	MDB_dbi posts;        /* id -> record */
	MDB_dbi author_posts; /* handle -> seq (8 bytes, big-endian) + id (dupsort:
	                         values sort by seq) */
	MDB_dbi refs;         /* sha256 -> post id (dupsort) */
	MDB_dbi tables[STORE_TABLE_COUNT]; /* key -> record, by enum store_table */
	int read_only;
	/* Writers open the environment with MDB_WRITEMAP: LMDB writes pages
	 * straight into the data file's map instead of copying each dirty page
	 * into malloc'd memory first, so a transaction costs memory for the
	 * pages it touches, not for the bytes it stores. Object bytes go in by
	 * pwrite or copy_file_range at their place in the file (fd, map). */
	int fd;
	size_t psize;
	atomic_int no_fallocate;  /* the file system cannot; the guard is off */
	/* Transactions open or being opened in this process. Remapping after
	 * another process grew the map is safe only when it is zero: every
	 * pointer into the old map dies with the remap. */
	atomic_int open_txns;
	pthread_mutex_t remap_lock;
};

struct store_txn {
	store *st;
	MDB_txn *txn;
	store_reader *reader;  /* a read transaction store_txn_abort resets into it */
	store_txn *next_free;  /* in reader's cache */
	int write;
	uint64_t declared;  /* bytes this write transaction said it would add */
	uint64_t allocated; /* file offset up to which blocks are known allocated */
};

/* A thread's cache of reset read transactions (store_reader.c). */
struct store_reader {
	store *st;
	store_txn *free; /* reset transactions, linked through next_free */
	unsigned n_free, keep;
};

/* Translates an LMDB code at the module's edge, logging LMDB's own words. */
int store__error(int rc, const char *what);

/* The space guard. Through a writable map, a page written where the disk
 * has no block for it raises SIGBUS instead of returning ENOSPC. So each
 * write declares, before LMDB can touch any page for it, the most the file
 * may grow by for it (n bytes), and the blocks past the last committed page
 * are allocated with fallocate, which reports ENOSPC: what the transaction
 * declared plus SPACE_HEADROOM for branch pages and the free list. Pages
 * LMDB reuses from its free list already have blocks. Returns 0, -ENOSPC
 * or another -errno. */
int store__reserve_space(store_txn *t, uint64_t n);

#endif
