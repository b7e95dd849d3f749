/* store_backup: snapshots, their verification, restore, and fsck's walks. */
#include "core/store.h"

#include "core/store_internal.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/store_backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_TABLES 32            /* named tables a snapshot may hold */
#define TABLE_NAME_MAX 64
#define INDEX_ID_MAX 64          /* as STORE_ID_MAX in store.c */
#define DBI_ABSENT ((MDB_dbi)~0u) /* as in store.c */

struct table_count {
	char name[TABLE_NAME_MAX + 1];
	uint64_t entries;
};

static void say(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Every named table of the environment and its entry count, in txn. */
static int count_tables(MDB_txn *txn, struct table_count *out, size_t max, size_t *n)
{
	MDB_dbi main_dbi;
	MDB_cursor *cur;
	MDB_val k, v;
	int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);

	*n = 0;
	if (rc != MDB_SUCCESS)
		return store__error(rc, "open main table");
	rc = mdb_cursor_open(txn, main_dbi, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		MDB_dbi dbi;
		MDB_stat s;
		if (*n == max || k.mv_size == 0 || k.mv_size > TABLE_NAME_MAX) {
			rc = MDB_CORRUPTED;
			break;
		}
		memcpy(out[*n].name, k.mv_data, k.mv_size);
		out[*n].name[k.mv_size] = '\0';
		rc = mdb_dbi_open(txn, out[*n].name, 0, &dbi);
		if (rc == MDB_SUCCESS)
			rc = mdb_stat(txn, dbi, &s);
		if (rc != MDB_SUCCESS)
			break;
		out[(*n)++].entries = s.ms_entries;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : store__error(rc, "count tables");
}

/* Reads every page of a value: one byte in each 4 KiB and the last. */
static unsigned touch(const MDB_val *v)
{
	const unsigned char *p = v->mv_data;
	unsigned sum = 0;
	for (size_t i = 0; i < v->mv_size; i += 4096)
		sum += p[i];
	if (v->mv_size > 0)
		sum += p[v->mv_size - 1];
	return sum;
}

/* Walks one table of the snapshot: every entry, every value read. */
static int walk_table(MDB_txn *txn, const char *name, uint64_t *found, uint64_t *stated,
                      volatile unsigned *sink)
{
	MDB_dbi dbi;
	MDB_cursor *cur;
	MDB_stat s;
	MDB_val k, v;
	int rc = mdb_dbi_open(txn, name, 0, &dbi);

	if (rc == MDB_SUCCESS)
		rc = mdb_stat(txn, dbi, &s);
	if (rc == MDB_SUCCESS)
		rc = mdb_cursor_open(txn, dbi, &cur);
	if (rc != MDB_SUCCESS)
		return rc;
	*found = 0;
	*stated = s.ms_entries;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		*sink += touch(&k) + touch(&v);
		(*found)++;
	}
	mdb_cursor_close(cur);
	return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Opens a snapshot file read-only, without a lock file. Checks the file
 * holds every page its meta page says it has before anything reads the
 * map: a page past the end of the file would raise SIGBUS. */
static int open_snapshot_env(const char *path, MDB_env **out, char *err, size_t errlen)
{
	MDB_env *env;
	MDB_envinfo info;
	MDB_stat ms;
	struct stat sb;
	int rc;

	if (stat(path, &sb) != 0) {
		rc = -errno;
		say(err, errlen, "%s: %s", path, sayin_strerror(rc));
		return rc;
	}
	if (!S_ISREG(sb.st_mode)) {
		say(err, errlen, "%s: not a regular file (a snapshot is one file)", path);
		return SAYIN_EINVAL;
	}
	rc = mdb_env_create(&env);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "env create");
	mdb_env_set_maxdbs(env, MAX_TABLES);
	rc = mdb_env_open(env, path, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0640);
	if (rc != MDB_SUCCESS) {
		say(err, errlen, "%s: not an LMDB data file: %s", path, mdb_strerror(rc));
		mdb_env_close(env);
		return rc == ENOENT || rc == EINVAL || rc == MDB_INVALID ? SAYIN_ECORRUPT
		                                                         : store__error(rc, path);
	}
	/* mdb_env_open read both meta pages with read(2): they are in the file. */
	mdb_env_info(env, &info);
	mdb_env_stat(env, &ms);
	if ((uint64_t)sb.st_size < ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize) {
		say(err, errlen, "%s: truncated: %lld bytes, its last page ends at %llu", path,
		    (long long)sb.st_size,
		    (unsigned long long)(((uint64_t)info.me_last_pgno + 1) * ms.ms_psize));
		mdb_env_close(env);
		return SAYIN_ECORRUPT;
	}
	*out = env;
	return 0;
}

/* Verifies an open snapshot; with src (n_src tables) also compares counts. */
static int verify_env(MDB_env *env, const char *path, const struct table_count *src,
                      size_t n_src, store_snapshot_info *out, char *err, size_t errlen)
{
	struct table_count tables[MAX_TABLES];
	volatile unsigned sink = 0;
	MDB_txn *txn;
	size_t n = 0;
	int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn);

	if (rc != MDB_SUCCESS)
		return store__error(rc, "begin (verify)");
	rc = count_tables(txn, tables, MAX_TABLES, &n);
	if (rc != 0) {
		say(err, errlen, "%s: cannot list its tables: %s", path, sayin_strerror(rc));
		goto done;
	}
	out->tables = (unsigned)n;
	out->entries = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t found = 0, stated = 0;
		rc = walk_table(txn, tables[i].name, &found, &stated, &sink);
		if (rc != 0) {
			say(err, errlen, "%s: table %s cannot be read: %s", path, tables[i].name,
			    mdb_strerror(rc));
			rc = store__error(rc, "verify");
			goto done;
		}
		if (found != stated) {
			say(err, errlen, "%s: table %s: %llu entries found, its count says %llu", path,
			    tables[i].name, (unsigned long long)found, (unsigned long long)stated);
			rc = SAYIN_ECORRUPT;
			goto done;
		}
		out->entries += found;
	}
	for (size_t i = 0; src != NULL && i < n_src; i++) {
		size_t j = 0;
		while (j < n && strcmp(tables[j].name, src[i].name) != 0)
			j++;
		if (j == n || tables[j].entries != src[i].entries) {
			say(err, errlen, "%s: table %s holds %llu entries, the store %llu", path,
			    src[i].name, j == n ? 0ull : (unsigned long long)tables[j].entries,
			    (unsigned long long)src[i].entries);
			rc = SAYIN_ECORRUPT;
			goto done;
		}
	}
	if (src != NULL && n != n_src) {
		say(err, errlen, "%s: %zu tables, the store has %zu", path, n, n_src);
		rc = SAYIN_ECORRUPT;
	}
done:
	mdb_txn_abort(txn);
	return rc;
}

int store_snapshot_verify(const char *path, store_snapshot_info *out, char *err, size_t errlen)
{
	store_snapshot_info info = { 0 };
	MDB_env *env;
	struct stat sb;
	int rc = open_snapshot_env(path, &env, err, errlen);

	if (rc != 0)
		return rc;
	rc = verify_env(env, path, NULL, 0, &info, err, errlen);
	mdb_env_close(env);
	if (rc == 0 && stat(path, &sb) == 0)
		info.bytes = (uint64_t)sb.st_size;
	if (out != NULL)
		*out = info;
	return rc;
}

/* Adopts a map grown by the writer since this process opened the store.
 * Safe here: the command holds no transaction of its own meanwhile. */
static int adopt_map(store *st, int rc)
{
	if (rc != MDB_MAP_RESIZED || atomic_load(&st->open_txns) != 0)
		return 0;
	return mdb_env_set_mapsize(st->env, 0) == MDB_SUCCESS;
}

/* The source's last committed transaction and, if counts is not NULL, its
 * tables' entry counts, in one read transaction. */
static int source_state(store *st, uint64_t *txnid, struct table_count *counts, size_t *n)
{
	MDB_txn *txn;
	int rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);

	if (adopt_map(st, rc))
		rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "begin (snapshot)");
	*txnid = mdb_txn_id(txn);
	rc = counts != NULL ? count_tables(txn, counts, MAX_TABLES, n) : 0;
	mdb_txn_abort(txn);
	return rc;
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (copy == NULL)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return rc;
}

/* A temporary file of ours is named PREFIX<pid>-XXXXXX. One whose pid no
 * longer runs was left by a killed run (SIGKILL, a unit's timeout, a
 * crash): remove it, or every such run would leave a store-sized file.
 * dir is where they live, prefix the name before the pid. Best effort. */
static void remove_stale_temps(const char *dir, const char *prefix)
{
	size_t plen = strlen(prefix);
	DIR *d = opendir(dir);
	struct dirent *e;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		char *end;
		long pid;

		if (strncmp(e->d_name, prefix, plen) != 0)
			continue;
		pid = strtol(e->d_name + plen, &end, 10);
		if (end == e->d_name + plen || *end != '-' || pid <= 0 || pid == (long)getpid() ||
		    kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) == 0)
			log_warn("backup: removed %s/%s, left by a run that was killed (pid %ld)", dir,
			         e->d_name, pid);
	}
	closedir(d);
}

int store_snapshot(store *st, const char *dest, store_snapshot_info *out, char *err,
                   size_t errlen)
{
	struct table_count before[MAX_TABLES];
	store_snapshot_info info = { 0 };
	size_t n_before = 0, len = strlen(dest);
	size_t tmp_len = len + sizeof(".tmp--XXXXXX") + 12;
	char *tmp = malloc(tmp_len);
	struct stat sb;
	int fd = -1, rc;

	if (tmp == NULL)
		return -ENOMEM;
	{
		char *copy = strdup(dest), *prefix = NULL;
		if (copy != NULL && asprintf(&prefix, "%s.tmp-", basename(copy)) >= 0) {
			char *dir = strdup(dest);
			if (dir != NULL)
				remove_stale_temps(dirname(dir), prefix);
			free(dir);
		}
		free(prefix);
		free(copy);
	}
	snprintf(tmp, tmp_len, "%s.tmp-%ld-XXXXXX", dest, (long)getpid());
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		say(err, errlen, "cannot create %s: %s", tmp, sayin_strerror(rc));
		free(tmp);
		return rc;
	}
	if (fchmod(fd, 0640) != 0) {
		rc = -errno;
		say(err, errlen, "%s: chmod: %s", tmp, sayin_strerror(rc));
		goto fail;
	}
	rc = source_state(st, &info.txn_before, before, &n_before);
	if (rc != 0) {
		say(err, errlen, "cannot read the store: %s", sayin_strerror(rc));
		goto fail;
	}
	/* LMDB copies in a read transaction of its own: the writer goes on. */
	rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
	if (adopt_map(st, rc)) {
		/* The copy could not begin: the writer had grown the map. */
		if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0)
			rc = errno;
		else
			rc = mdb_env_copyfd2(st->env, fd, MDB_CP_COMPACT);
	}
	if (rc != MDB_SUCCESS) {
		say(err, errlen, "copying the store into %s failed: %s", tmp, mdb_strerror(rc));
		rc = store__error(rc, "copy");
		goto fail;
	}
	rc = source_state(st, &info.txn_after, NULL, NULL);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (rc == 0 && fstat(fd, &sb) != 0)
		rc = -errno;
	if (rc != 0) {
		say(err, errlen, "%s: %s", tmp, sayin_strerror(rc));
		goto fail;
	}
	info.bytes = (uint64_t)sb.st_size;
	close(fd);
	fd = -1;
	/* The copy is the state of some transaction between the two; when no
	 * writer committed meanwhile it is exactly the counted one. */
	info.counts_compared = info.txn_before == info.txn_after;
	{
		MDB_env *env;
		store_snapshot_info v = { 0 };
		rc = open_snapshot_env(tmp, &env, err, errlen);
		if (rc == 0) {
			rc = verify_env(env, tmp, info.counts_compared ? before : NULL, n_before, &v,
			                err, errlen);
			mdb_env_close(env);
		}
		if (rc != 0)
			goto fail;
		info.entries = v.entries;
		info.tables = v.tables;
	}
	if (rename(tmp, dest) != 0) {
		rc = -errno;
		say(err, errlen, "cannot rename %s to %s: %s", tmp, dest, sayin_strerror(rc));
		goto fail;
	}
	rc = fsync_dir_of(dest);
	if (rc != 0) {
		/* dest is complete; only its name's durability is unknown. */
		say(err, errlen, "%s written, but syncing its directory failed: %s", dest,
		    sayin_strerror(rc));
		free(tmp);
		return rc;
	}
	free(tmp);
	if (out != NULL)
		*out = info;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

/* The tables of store.c's store_open_dbis, by name. */
static int snapshot_dbis(store *st, MDB_txn *txn)
{
	static const struct {
		const char *name;
		size_t offset;
	} dbs[] = {
		{ "objects", offsetof(store, objects) },
		{ "names", offsetof(store, names) },
		{ "posts", offsetof(store, posts) },
		{ "author_posts", offsetof(store, author_posts) },
		{ "authors", offsetof(store, tables[STORE_AUTHORS]) },
		{ "refs", offsetof(store, refs) },
		{ "tokens", offsetof(store, tables[STORE_TOKENS]) },
		{ "idempotency", offsetof(store, tables[STORE_IDEMPOTENCY]) },
		{ "outbox", offsetof(store, tables[STORE_OUTBOX]) },
		{ "meta", offsetof(store, tables[STORE_META]) },
		{ "crossposts", offsetof(store, tables[STORE_CROSSPOSTS]) },
	};
	for (size_t i = 0; i < sizeof(dbs) / sizeof(dbs[0]); i++) {
		MDB_dbi *dbi = (MDB_dbi *)((char *)st + dbs[i].offset);
		int rc = mdb_dbi_open(txn, dbs[i].name, 0, dbi);
		if (rc == MDB_NOTFOUND && i >= 4) {
			*dbi = DBI_ABSENT;
			continue;
		}
		if (rc != MDB_SUCCESS)
			return rc == MDB_NOTFOUND ? SAYIN_ECORRUPT : store__error(rc, "open table");
	}
	return 0;
}

int store_snapshot_open(const char *path, store **out)
{
	char err[512];
	MDB_txn *txn;
	store *st;
	int rc;

	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return -ENOMEM;
	st->read_only = 1;
	st->fd = -1;
	atomic_init(&st->open_txns, 0);
	pthread_mutex_init(&st->remap_lock, NULL);
	rc = open_snapshot_env(path, &st->env, err, sizeof(err));
	if (rc != 0) {
		log_error("store: %s", err);
		pthread_mutex_destroy(&st->remap_lock);
		free(st);
		return rc;
	}
	rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
	if (rc == MDB_SUCCESS) {
		rc = snapshot_dbis(st, txn);
		/* Handles opened in a transaction outlive it only if it commits. */
		if (rc == 0)
			rc = store__error(mdb_txn_commit(txn), "commit (open tables)");
		else
			mdb_txn_abort(txn);
	} else {
		rc = store__error(rc, "begin");
	}
	if (rc != 0) {
		store_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

static int lock_path(const char *dir, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/lock.mdb", dir);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* Who holds a lock on the lock file's first byte: 0 (nobody) or -EBUSY. */
static int lock_holder(int fd, pid_t *pid)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	if (fcntl(fd, F_GETLK, &fl) != 0)
		return -errno;
	if (fl.l_type == F_UNLCK)
		return 0;
	if (pid != NULL)
		*pid = fl.l_pid;
	return -EBUSY;
}

int store_in_use(const char *dir, pid_t *pid)
{
	char path[4096];
	int fd, rc = lock_path(dir, path, sizeof(path));

	if (rc != 0)
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	rc = lock_holder(fd, pid);
	close(fd);
	return rc;
}

/* 1 if dir holds anything but a lock file, 0 if not, or -errno. */
static int holds_store(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int found = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
		    strcmp(e->d_name, "lock.mdb") != 0)
			found = 1;
	}
	closedir(d);
	return found;
}

int store_restore(const char *src, const char *dir, int force, pid_t *pid,
                  store_snapshot_info *out, char *err, size_t errlen)
{
	char lock[4096], tmp[4096], data[4096];
	store_snapshot_info info = { 0 };
	struct stat sb;
	int lock_fd = -1, src_fd = -1, fd = -1, made_tmp = 0, rc;

	if (lock_path(dir, lock, sizeof(lock)) != 0 ||
	    snprintf(data, sizeof(data), "%s/data.mdb", dir) >= (int)sizeof(data) ||
	    snprintf(tmp, sizeof(tmp), "%s/.data.mdb.restore-%ld-XXXXXX", dir, (long)getpid()) >=
	            (int)sizeof(tmp))
		return -ENAMETOOLONG;
	rc = store_snapshot_verify(src, &info, err, errlen);
	if (rc != 0)
		return rc;
	if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
		rc = -errno;
		say(err, errlen, "cannot create %s: %s", dir, sayin_strerror(rc));
		return rc;
	}
	/* Held until the new data file is in place: a process opening the
	 * store meanwhile waits for it (LMDB asks for a shared lock). */
	lock_fd = open(lock, O_RDWR | O_CLOEXEC);
	if (lock_fd < 0 && errno != ENOENT) {
		rc = -errno;
		say(err, errlen, "%s: %s", lock, sayin_strerror(rc));
		return rc;
	}
	if (lock_fd >= 0) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0,
			            .l_len = 1 };
		if (fcntl(lock_fd, F_SETLK, &fl) != 0) {
			rc = errno == EAGAIN || errno == EACCES ? lock_holder(lock_fd, pid) : -errno;
			if (rc == 0)
				rc = -EBUSY; /* released meanwhile: still, someone had it */
			say(err, errlen, "%s is in use: %s", dir,
			    rc == -EBUSY ? "a process has the store open" : sayin_strerror(rc));
			goto done;
		}
	}
	remove_stale_temps(dir, ".data.mdb.restore-");
	rc = holds_store(dir);
	if (rc < 0) {
		say(err, errlen, "%s: %s", dir, sayin_strerror(rc));
		goto done;
	}
	if (rc == 1 && !force) {
		say(err, errlen, "%s is not empty (it holds a store?): use --force to replace it", dir);
		rc = -ENOTEMPTY;
		goto done;
	}
	src_fd = open(src, O_RDONLY | O_CLOEXEC);
	if (src_fd < 0 || fstat(src_fd, &sb) != 0) {
		rc = -errno;
		say(err, errlen, "%s: %s", src, sayin_strerror(rc));
		goto done;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		say(err, errlen, "cannot create a file in %s: %s", dir, sayin_strerror(rc));
		goto done;
	}
	made_tmp = 1;
	rc = fchmod(fd, 0640) != 0 ? -errno : 0;
	if (rc == 0)
		rc = fileio_copy(src_fd, fd, 0, (uint64_t)sb.st_size);
	if (rc == 0 && fsync(fd) != 0)
		rc = -errno;
	if (rc != 0) {
		say(err, errlen, "copying %s into %s failed: %s", src, dir, sayin_strerror(rc));
		goto done;
	}
	close(fd);
	fd = -1;
	rc = store_snapshot_verify(tmp, &info, err, errlen);
	if (rc != 0)
		goto done;
	if (rename(tmp, data) != 0) {
		rc = -errno;
		say(err, errlen, "cannot rename %s to %s: %s", tmp, data, sayin_strerror(rc));
		goto done;
	}
	made_tmp = 0;
	rc = fsync_dir_of(data);
	if (rc != 0)
		say(err, errlen, "%s installed, but syncing %s failed: %s", data, dir,
		    sayin_strerror(rc));
done:
	if (fd >= 0)
		close(fd);
	if (made_tmp)
		unlink(tmp);
	if (src_fd >= 0)
		close(src_fd);
	if (lock_fd >= 0)
		close(lock_fd); /* releases the lock */
	if (rc == 0 && out != NULL)
		*out = info;
	return rc;
}

/* ---- fsck's walks */

/* Walks every entry of dbi: fn(arg, key, value) as in store_each_record. */
static int walk(store_txn *t, MDB_dbi dbi, int (*fn)(void *, const MDB_val *, const MDB_val *),
                void *arg)
{
	MDB_cursor *cur;
	MDB_val k, v;
	int rc, stop = 0;

	if (dbi == DBI_ABSENT)
		return 0;
	rc = mdb_cursor_open(t->txn, dbi, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == MDB_SUCCESS;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
		stop = fn(arg, &k, &v);
		if (stop != 0)
			break;
	}
	mdb_cursor_close(cur);
	if (stop != 0)
		return stop;
	return rc == MDB_NOTFOUND ? 0 : store__error(rc, "walk");
}

/* A key as a C string; 0 or -1 when it does not fit or holds a NUL. */
static int key_string(const MDB_val *k, char *buf, size_t len)
{
	if (k->mv_size == 0 || k->mv_size >= len || memchr(k->mv_data, '\0', k->mv_size) != NULL)
		return -1;
	memcpy(buf, k->mv_data, k->mv_size);
	buf[k->mv_size] = '\0';
	return 0;
}

struct walk_ctx {
	store_txn *t;
	void *fn;
	void *arg;
};

static int post_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
	struct walk_ctx *c = arg;
	char id[INDEX_ID_MAX + 1];
	if (key_string(k, id, sizeof(id)) != 0)
		snprintf(id, sizeof(id), "(a key of %zu bytes)", k->mv_size);
	return ((store_walk_post_fn)c->fn)(c->arg, id, v->mv_data, v->mv_size);
}

int store_walk_posts(store_txn *t, store_walk_post_fn fn, void *arg)
{
	struct walk_ctx c = { t, (void *)fn, arg };
	return walk(t, t->st->posts, post_cb, &c);
}

static int index_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
	struct walk_ctx *c = arg;
	store_walk_index_fn fn = (store_walk_index_fn)c->fn;
	char author[INDEX_ID_MAX + 1], id[INDEX_ID_MAX + 1];
	const unsigned char *p = v->mv_data;
	uint64_t seq = 0;

	if (key_string(k, author, sizeof(author)) != 0)
		snprintf(author, sizeof(author), "(a key of %zu bytes)", k->mv_size);
	if (v->mv_size <= 8 || v->mv_size > 8 + INDEX_ID_MAX)
		return fn(c->arg, SAYIN_ECORRUPT, author, 0, "");
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | p[i];
	memcpy(id, p + 8, v->mv_size - 8);
	id[v->mv_size - 8] = '\0';
	return fn(c->arg, 0, author, seq, id);
}

int store_walk_index(store_txn *t, store_walk_index_fn fn, void *arg)
{
	struct walk_ctx c = { t, (void *)fn, arg };
	return walk(t, t->st->author_posts, index_cb, &c);
}

static int name_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
	struct walk_ctx *c = arg;
	store_walk_name_fn fn = (store_walk_name_fn)c->fn;
	char name[512];
	store_name value;
	int rc;

	(void)v;
	if (key_string(k, name, sizeof(name)) != 0) {
		snprintf(name, sizeof(name), "(a key of %zu bytes)", k->mv_size);
		memset(&value, 0, sizeof(value));
		return fn(c->arg, SAYIN_ECORRUPT, name, &value);
	}
	rc = store_get_name(c->t, name, &value);
	if (rc != 0)
		memset(&value, 0, sizeof(value));
	return fn(c->arg, rc == 0 ? 0 : SAYIN_ECORRUPT, name, &value);
}

int store_walk_names(store_txn *t, store_walk_name_fn fn, void *arg)
{
	struct walk_ctx c = { t, (void *)fn, arg };
	return walk(t, t->st->names, name_cb, &c);
}

static int object_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
	struct walk_ctx *c = arg;
	store_walk_object_fn fn = (store_walk_object_fn)c->fn;
	uint8_t hash[STORE_HASH_LEN] = { 0 };
	store_object obj;
	int rc;

	(void)v;
	memset(&obj, 0, sizeof(obj));
	if (k->mv_size != STORE_HASH_LEN)
		return fn(c->arg, SAYIN_ECORRUPT, hash, &obj);
	memcpy(hash, k->mv_data, STORE_HASH_LEN);
	rc = store_get_object(c->t, hash, &obj);
	if (rc != 0)
		memset(&obj, 0, sizeof(obj));
	return fn(c->arg, rc == 0 ? 0 : SAYIN_ECORRUPT, hash, &obj);
}

int store_walk_objects(store_txn *t, store_walk_object_fn fn, void *arg)
{
	struct walk_ctx c = { t, (void *)fn, arg };
	return walk(t, t->st->objects, object_cb, &c);
}

static int ref_cb(void *arg, const MDB_val *k, const MDB_val *v)
{
	struct walk_ctx *c = arg;
	uint8_t hash[STORE_HASH_LEN] = { 0 };
	char id[INDEX_ID_MAX + 1];

	if (k->mv_size == STORE_HASH_LEN)
		memcpy(hash, k->mv_data, STORE_HASH_LEN);
	if (key_string(v, id, sizeof(id)) != 0)
		snprintf(id, sizeof(id), "(a value of %zu bytes)", v->mv_size);
	return ((store_walk_ref_fn)c->fn)(c->arg, hash, id);
}

int store_walk_refs(store_txn *t, store_walk_ref_fn fn, void *arg)
{
	struct walk_ctx c = { t, (void *)fn, arg };
	return walk(t, t->st->refs, ref_cb, &c);
}

int store_ref_exists(store_txn *t, const uint8_t hash[STORE_HASH_LEN], const char *post_id)
{
	MDB_val key = { STORE_HASH_LEN, (void *)hash }, val = { strlen(post_id), (void *)post_id };
	MDB_cursor *cur;
	int rc;

	if (t->st->refs == DBI_ABSENT)
		return SAYIN_ENOTFOUND;
	rc = mdb_cursor_open(t->txn, t->st->refs, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = mdb_cursor_get(cur, &key, &val, MDB_GET_BOTH);
	mdb_cursor_close(cur);
	return store__error(rc, "find reference");
}

int store_ref_count(store_txn *t, const uint8_t hash[STORE_HASH_LEN], size_t *count)
{
	MDB_val key = { STORE_HASH_LEN, (void *)hash }, val;
	MDB_cursor *cur;
	size_t n = 0;
	int rc;

	*count = 0;
	if (t->st->refs == DBI_ABSENT)
		return 0;
	rc = mdb_cursor_open(t->txn, t->st->refs, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = mdb_cursor_get(cur, &key, &val, MDB_SET);
	if (rc == MDB_SUCCESS)
		rc = mdb_cursor_count(cur, &n);
	mdb_cursor_close(cur);
	if (rc != MDB_SUCCESS && rc != MDB_NOTFOUND)
		return store__error(rc, "count references");
	*count = n;
	return 0;
}

int store_index_exists(store_txn *t, const char *author, uint64_t seq, const char *id)
{
	unsigned char buf[8 + INDEX_ID_MAX];
	size_t len = strlen(id);
	MDB_val key = { strlen(author), (void *)author }, val = { 8 + len, buf };
	MDB_cursor *cur;
	int rc;

	if (key.mv_size == 0 || len == 0 || len > INDEX_ID_MAX)
		return SAYIN_ENOTFOUND;
	for (int i = 7; i >= 0; i--) {
		buf[i] = (unsigned char)(seq & 0xff);
		seq >>= 8;
	}
	memcpy(buf + 8, id, len);
	rc = mdb_cursor_open(t->txn, t->st->author_posts, &cur);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "cursor");
	rc = mdb_cursor_get(cur, &key, &val, MDB_GET_BOTH);
	mdb_cursor_close(cur);
	return store__error(rc, "find index entry");
}
