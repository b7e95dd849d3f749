/* test_store_backup: snapshots, their verification, restore, and fsck's walks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/error.h"
#include "core/store.h"
#include "core/store_backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char *make_dir(void)
{
	char tmpl[] = "/tmp/sayin-backup-XXXXXX";
	char *d = mkdtemp(tmpl);
	assert_non_null(d);
	return strdup(d);
}

static void remove_dir(char *dir)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(dir);
}

static size_t entries_in(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;
	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	closedir(d);
	return n;
}

/* A store in dir/store with two posts sharing one object, a name, a
 * record. Returns the shared object's hash in shared. */
static store *populate(const char *dir, uint8_t shared[STORE_HASH_LEN])
{
	char path[512];
	uint8_t page[STORE_HASH_LEN];
	store *st = NULL;
	store_txn *t;

	snprintf(path, sizeof(path), "%s/store", dir);
	assert_int_equal(store_open(path, NULL, &st), 0);
	assert_int_equal(store_txn_begin(st, 1, &t), 0);
	assert_int_equal(store_put_object(t, "audio", 5, "audio/ogg", 1, shared, NULL), 0);
	assert_int_equal(store_put_object(t, "<html>", 6, "text/html", 1, page, NULL), 0);
	assert_int_equal(store_set_name(t, "/p/a", page, 1), 0);
	assert_int_equal(store_put_post(t, "a", "ann", 1, "{}", 2), 0);
	assert_int_equal(store_put_post(t, "b", "ann", 2, "{}", 2), 0);
	assert_int_equal(store_ref_add(t, shared, "a"), 0);
	assert_int_equal(store_ref_add(t, shared, "b"), 0);
	assert_int_equal(store_put_author(t, "ann", "{}", 2), 0);
	assert_int_equal(store_txn_commit(t), 0);
	return st;
}

static int count_post(void *arg, const char *id, const void *rec, size_t len)
{
	(void)id, (void)rec, (void)len;
	(*(int *)arg)++;
	return 0;
}

static int count_index(void *arg, int status, const char *author, uint64_t seq, const char *id)
{
	assert_int_equal(status, 0);
	assert_string_equal(author, "ann");
	assert_true(seq == 1 || seq == 2);
	assert_string_equal(id, seq == 1 ? "a" : "b");
	(*(int *)arg)++;
	return 0;
}

static int count_object(void *arg, int status, const uint8_t hash[STORE_HASH_LEN],
                        const store_object *obj)
{
	(void)hash;
	assert_int_equal(status, 0);
	assert_non_null(obj->data);
	(*(int *)arg)++;
	return 0;
}

static int count_ref(void *arg, const uint8_t hash[STORE_HASH_LEN], const char *post_id)
{
	(void)hash, (void)post_id;
	(*(int *)arg)++;
	return 0;
}

static int count_name(void *arg, int status, const char *name, const store_name *value)
{
	assert_int_equal(status, 0);
	assert_string_equal(name, "/p/a");
	assert_true(value->encodings & 1u);
	(*(int *)arg)++;
	return 0;
}

static void test_snapshot_is_whole_verified_and_readable(void **state)
{
	(void)state;
	char *dir = make_dir();
	char dest[512];
	uint8_t shared[STORE_HASH_LEN], missing[STORE_HASH_LEN] = { 1 };
	store_snapshot_info info, v;
	store *st = populate(dir, shared), *snap = NULL;
	store_txn *t;
	store_object obj;
	size_t refs = 0;
	int posts = 0, index = 0, objects = 0, n_refs = 0, names = 0;

	snprintf(dest, sizeof(dest), "%s/snap.mdb", dir);
	assert_int_equal(store_snapshot(st, dest, &info, NULL, 0), 0);
	assert_true(info.counts_compared);
	assert_int_equal(info.txn_before, info.txn_after);
	/* objects 2, names 1, posts 2, index 2, refs 2, authors 1, and the
	 * store's format record (meta) */
	assert_int_equal(info.entries, 11);
	assert_int_equal(entries_in(dir), 2); /* store/ and snap.mdb: no temporary file */
	assert_int_equal(store_snapshot_verify(dest, &v, NULL, 0), 0);
	assert_int_equal(v.entries, 11);
	assert_int_equal(v.bytes, info.bytes);
	store_close(st);

	assert_int_equal(store_snapshot_open(dest, &snap), 0);
	assert_int_equal(entries_in(dir), 2); /* reading it made no lock file */
	assert_int_equal(store_txn_begin(snap, 1, &t), SAYIN_EREADONLY);
	assert_int_equal(store_txn_begin(snap, 0, &t), 0);
	assert_int_equal(store_get_object(t, shared, &obj), 0);
	assert_memory_equal(obj.data, "audio", 5);
	assert_int_equal(store_walk_posts(t, count_post, &posts), 0);
	assert_int_equal(store_walk_index(t, count_index, &index), 0);
	assert_int_equal(store_walk_objects(t, count_object, &objects), 0);
	assert_int_equal(store_walk_refs(t, count_ref, &n_refs), 0);
	assert_int_equal(store_walk_names(t, count_name, &names), 0);
	assert_int_equal(posts, 2);
	assert_int_equal(index, 2);
	assert_int_equal(objects, 2);
	assert_int_equal(n_refs, 2);
	assert_int_equal(names, 1);
	assert_int_equal(store_ref_count(t, shared, &refs), 0);
	assert_int_equal(refs, 2);
	assert_int_equal(store_ref_count(t, missing, &refs), 0);
	assert_int_equal(refs, 0);
	assert_int_equal(store_ref_exists(t, shared, "a"), 0);
	assert_int_equal(store_ref_exists(t, shared, "c"), SAYIN_ENOTFOUND);
	assert_int_equal(store_index_exists(t, "ann", 2, "b"), 0);
	assert_int_equal(store_index_exists(t, "ann", 1, "b"), SAYIN_ENOTFOUND);
	store_txn_abort(t);
	store_close(snap);
	remove_dir(dir);
}

static void test_a_damaged_snapshot_does_not_verify(void **state)
{
	(void)state;
	char *dir = make_dir();
	char dest[512], cut[512], cmd[1200];
	uint8_t shared[STORE_HASH_LEN];
	store *st = populate(dir, shared);
	struct stat sb;
	char err[512];
	int fd;

	snprintf(dest, sizeof(dest), "%s/snap.mdb", dir);
	snprintf(cut, sizeof(cut), "%s/cut.mdb", dir);
	assert_int_equal(store_snapshot(st, dest, NULL, NULL, 0), 0);
	store_close(st);
	assert_int_equal(stat(dest, &sb), 0);
	snprintf(cmd, sizeof(cmd), "head -c %lld '%s' > '%s'", (long long)sb.st_size - 4096, dest,
	         cut);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(store_snapshot_verify(cut, NULL, err, sizeof(err)), SAYIN_ECORRUPT);
	assert_non_null(strstr(err, "truncated"));
	fd = open(cut, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "not a store", 11), 11);
	close(fd);
	assert_int_equal(store_snapshot_verify(cut, NULL, err, sizeof(err)), SAYIN_ECORRUPT);
	snprintf(cut, sizeof(cut), "%s/none.mdb", dir);
	assert_int_equal(store_snapshot_verify(cut, NULL, err, sizeof(err)), -ENOENT);
	remove_dir(dir);
}

static void test_failed_snapshot_leaves_nothing(void **state)
{
	(void)state;
	char *dir = make_dir();
	char dest[512];
	uint8_t shared[STORE_HASH_LEN];
	store *st = populate(dir, shared);
	char err[512] = "";

	snprintf(dest, sizeof(dest), "%s/no/such/dir/snap.mdb", dir);
	assert_int_equal(store_snapshot(st, dest, NULL, err, sizeof(err)), -ENOENT);
	assert_non_null(strstr(err, "cannot create"));
	assert_int_equal(entries_in(dir), 1);
	store_close(st);
	remove_dir(dir);
}

static void test_restore_installs_and_refuses(void **state)
{
	(void)state;
	char *dir = make_dir();
	char dest[512], target[512], storedir[512];
	uint8_t shared[STORE_HASH_LEN];
	store *st = populate(dir, shared), *back = NULL;
	store_txn *t;
	store_object obj;
	pid_t pid = 0, child;
	int ready[2];
	char c;

	snprintf(dest, sizeof(dest), "%s/snap.mdb", dir);
	snprintf(target, sizeof(target), "%s/restored", dir);
	snprintf(storedir, sizeof(storedir), "%s/store", dir);
	assert_int_equal(store_snapshot(st, dest, NULL, NULL, 0), 0);
	store_close(st);

	assert_int_equal(store_restore(dest, target, 0, &pid, NULL, NULL, 0), 0);
	assert_int_equal(store_open(target, NULL, &back), 0);
	assert_int_equal(store_txn_begin(back, 0, &t), 0);
	assert_int_equal(store_get_object(t, shared, &obj), 0);
	store_txn_abort(t);
	store_close(back);
	/* It holds a store now. */
	assert_int_equal(store_restore(dest, target, 0, &pid, NULL, NULL, 0), -ENOTEMPTY);
	assert_int_equal(store_restore(dest, target, 1, &pid, NULL, NULL, 0), 0);

	/* Another process has the store open: refused even with force. */
	assert_int_equal(pipe(ready), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		store_options ro = { .read_only = 1 };
		store *other = NULL;
		if (store_open(storedir, &ro, &other) != 0)
			_exit(1);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(store_in_use(storedir, &pid), -EBUSY);
	assert_int_equal(pid, child);
	pid = 0;
	assert_int_equal(store_restore(dest, storedir, 1, &pid, NULL, NULL, 0), -EBUSY);
	assert_int_equal(pid, child);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(ready[0]);
	close(ready[1]);
	assert_int_equal(store_in_use(storedir, NULL), 0);
	assert_int_equal(store_restore(dest, storedir, 1, &pid, NULL, NULL, 0), 0);
	remove_dir(dir);
}

/* The writer grew the map after the backup opened the store: the snapshot
 * adopts the new size instead of failing. */
static void test_snapshot_after_the_writer_grew_the_map(void **state)
{
	(void)state;
	char *dir = make_dir();
	char dest[512], storedir[512];
	store_options small = { .map_size = 1u << 20 }, ro = { .read_only = 1 };
	store *st = NULL, *reader = NULL;
	store_snapshot_info info;
	pid_t child;
	int status;

	snprintf(storedir, sizeof(storedir), "%s/store", dir);
	snprintf(dest, sizeof(dest), "%s/snap.mdb", dir);
	assert_int_equal(store_open(storedir, &small, &st), 0);
	store_close(st);
	assert_int_equal(store_open(storedir, &ro, &reader), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* Four MiB more than the reader's 1 MiB map. */
		store_options big = { .map_size = 16u << 20 };
		size_t len = 4u << 20;
		unsigned char *bytes = calloc(1, len);
		uint8_t h[STORE_HASH_LEN];
		store *w = NULL;
		store_txn *t;
		if (bytes == NULL || store_open(storedir, &big, &w) != 0 ||
		    store_txn_begin(w, 1, &t) != 0 ||
		    store_put_object(t, bytes, len, "text/plain", 2, h, NULL) != 0 ||
		    store_txn_commit(t) != 0)
			_exit(1);
		store_close(w);
		free(bytes);
		_exit(0);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_int_equal(store_snapshot(reader, dest, &info, NULL, 0), 0);
	assert_true(info.bytes > (4u << 20));
	store_close(reader);
	remove_dir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_snapshot_is_whole_verified_and_readable),
		cmocka_unit_test(test_a_damaged_snapshot_does_not_verify),
		cmocka_unit_test(test_failed_snapshot_leaves_nothing),
		cmocka_unit_test(test_restore_installs_and_refuses),
		cmocka_unit_test(test_snapshot_after_the_writer_grew_the_map),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
