/* store_reader: a thread's cache of read transactions, reset and renewed
 * (mdb_txn_reset / mdb_txn_renew) instead of begun per request; ending one
 * (store_txn_abort, store.c) puts it back. */
#include "core/store.h"
#include "core/store_internal.h"

#include <lmdb.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>

int store_reader_new(store *st, unsigned keep, store_reader **out)
{
	store_reader *r = calloc(1, sizeof(*r));

	if (r == NULL)
		return -ENOMEM;
	r->st = st;
	r->keep = keep;
	*out = r;
	return 0;
}

int store_reader_begin(store_reader *r, store_txn **out)
{
	store_txn *t = r->free;
	int rc;

	if (t != NULL) {
		r->free = t->next_free;
		r->n_free--;
		t->next_free = NULL;
		/* Counted before it holds the map, as in store_txn_begin. */
		atomic_fetch_add(&r->st->open_txns, 1);
		rc = mdb_txn_renew(t->txn);
		if (rc == MDB_SUCCESS) {
			*out = t;
			return 0;
		}
		/* MDB_MAP_RESIZED (another process grew the map) or a failure:
		 * a fresh begin adopts the new size or reports it. */
		atomic_fetch_sub(&r->st->open_txns, 1);
		mdb_txn_abort(t->txn);
		free(t);
	}
	rc = store_txn_begin(r->st, 0, &t);
	if (rc != 0)
		return rc;
	t->reader = r;
	*out = t;
	return 0;
}

void store_reader_free(store_reader *r)
{
	if (r == NULL)
		return;
	while (r->free != NULL) {
		store_txn *t = r->free;
		r->free = t->next_free;
		mdb_txn_abort(t->txn);
		free(t);
	}
	free(r);
}
