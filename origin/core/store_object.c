/* store_object: content-addressed objects: hashing, the space guard, the copy in. */
#include "core/store.h"

#include "core/store_internal.h"

#include "core/error.h"
#include "core/fileio.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OBJECT_MAGIC 0x424f5953u /* "SYOB" */
#define OBJECT_VERSION 1
/* Blocks the space guard allocates beyond what a write transaction declared
 * (branch pages, the free list); see store__reserve_space. */
#define SPACE_HEADROOM (1u << 20)
/* Object bytes at least this long go into the data file by pwrite, not
 * through the map, so the writer's memory does not grow with them. */
#define PWRITE_MIN (64u << 10)
#define COPY_CHUNK (256u << 10)

/* An object's value: this header, then the bytes. The bytes stay contiguous
 * in the data file, so they can be written straight from the map. */
struct object_header {
	uint32_t magic;
	uint16_t version;
	uint16_t reserved;
	uint64_t size;
	int64_t created;
	char content_type[STORE_CTYPE_MAX + 1];
};

/* The space guard: see store_internal.h. */
int store__reserve_space(store_txn *t, uint64_t n)
{
	store *st = t->st;
	MDB_envinfo info;
	uint64_t from, need, extra;
	int e;

	if (!t->write || atomic_load(&st->no_fallocate))
		return 0;
	t->declared += n;
	mdb_env_info(st->env, &info);
	from = ((uint64_t)info.me_last_pgno + 1) * st->psize;
	need = from + t->declared + SPACE_HEADROOM;
	if (need > info.me_mapsize)
		need = info.me_mapsize; /* beyond it LMDB says MDB_MAP_FULL */
	if (need <= t->allocated || need <= from)
		return 0;
	/* Some more than needed, so that small records do not each cost a
	 * system call; only what is needed if the disk has no more. */
	extra = info.me_mapsize - need < SPACE_HEADROOM ? info.me_mapsize - need : SPACE_HEADROOM;
	if (extra > 0 && fallocate(st->fd, 0, (off_t)from, (off_t)(need + extra - from)) == 0) {
		t->allocated = need + extra;
		return 0;
	}
	if (fallocate(st->fd, 0, (off_t)from, (off_t)(need - from)) == 0) {
		t->allocated = need;
		return 0;
	}
	e = errno;
	if (e == EOPNOTSUPP || e == ENOSYS) {
		atomic_store(&st->no_fallocate, 1);
		log_warn("store: the file system cannot allocate ahead (fallocate: %s); a full "
		         "disk will stop the writer with SIGBUS instead of an error", strerror(e));
		return 0;
	}
	log_error("store: no room for the transaction: cannot allocate %llu bytes in the data "
	          "file: %s", (unsigned long long)(need - from), strerror(e));
	return -e;
}

static int sha256(const void *bytes, size_t len, uint8_t out[STORE_HASH_LEN])
{
	unsigned int n = 0;
	if (EVP_Digest(bytes, len, out, &n, EVP_sha256(), NULL) != 1 || n != STORE_HASH_LEN) {
		log_error("store: SHA-256 failed");
		return SAYIN_ESTORE;
	}
	return 0;
}

/* SHA-256 of len bytes of fd from offset 0. -EIO if the file is shorter. */
static int sha256_file(int fd, uint64_t len, uint8_t out[STORE_HASH_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char *buf = malloc(COPY_CHUNK);
	unsigned int n = 0;
	int rc = 0;

	if (ctx == NULL || buf == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
		rc = ctx == NULL || buf == NULL ? -ENOMEM : SAYIN_ESTORE;
		goto out;
	}
	for (uint64_t off = 0; off < len;) {
		size_t want = len - off < COPY_CHUNK ? (size_t)(len - off) : COPY_CHUNK, got;
		rc = fileio_read(fd, buf, want, (int64_t)off, &got);
		if (rc == 0 && got < want)
			rc = -EIO; /* the file is shorter than len */
		if (rc != 0)
			goto out;
		if (EVP_DigestUpdate(ctx, buf, got) != 1) {
			rc = SAYIN_ESTORE;
			goto out;
		}
		off += (uint64_t)got;
	}
	if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != STORE_HASH_LEN)
		rc = SAYIN_ESTORE;
out:
	if (rc == SAYIN_ESTORE)
		log_error("store: SHA-256 failed");
	EVP_MD_CTX_free(ctx);
	free(buf);
	return rc;
}

/* Where a value LMDB just reserved lies in the data file, if it is an
 * overflow run of its own (values larger than about half a page). The page
 * header is LMDB's on-disk format (mdb.c, MDB_DATA_VERSION 1): the page
 * number (8 bytes), 2 bytes of padding, the flags (2 bytes, P_OVERFLOW =
 * 0x04), the run's page count (4 bytes), then the value. LMDB gives no map
 * address to ask for (mdb_env_info's me_mapaddr is MDB_FIXEDMAP's), so the
 * header tells the page. Returns 0 and *off, or -1: write through the map. */
static int value_file_offset(const store *st, const MDB_val *val, uint64_t *off)
{
	const unsigned char *page = (const unsigned char *)val->mv_data - 16;
	uint64_t pgno;
	uint16_t flags;
	uint32_t pages;

	memcpy(&pgno, page, sizeof(pgno));
	memcpy(&flags, page + 10, sizeof(flags));
	memcpy(&pages, page + 12, sizeof(pages));
	if (!(flags & 0x04) || (uint64_t)pages * st->psize < val->mv_size + 16 ||
	    ((uintptr_t)page - (uintptr_t)pgno * st->psize) % st->psize != 0)
		return -1;
	*off = pgno * st->psize + 16;
	return 0;
}

/* Reads len bytes of fd from offset 0: 0, -EIO if the file is shorter, or
 * -errno. */
static int read_whole(int fd, void *buf, size_t len)
{
	size_t got;
	int rc = fileio_read(fd, buf, len, 0, &got);
	return rc == 0 && got < len ? -EIO : rc;
}

/* store_put_object and store_put_object_file: the bytes come from memory
 * (bytes) or from fd. */
static int put_object(store_txn *t, const void *bytes, int fd, uint64_t len,
                      const char *content_type, int64_t now, uint8_t hash_out[STORE_HASH_LEN],
                      int *is_new)
{
	struct object_header h;
	uint8_t hash[STORE_HASH_LEN];
	MDB_val key, val;
	size_t ctype_len = strlen(content_type);
	uint64_t off = 0;
	int rc, in_file;

	if (ctype_len > STORE_CTYPE_MAX || len > SIZE_MAX - sizeof(h))
		return SAYIN_EINVAL;
	rc = bytes != NULL || len == 0 ? sha256(bytes, (size_t)len, hash) : sha256_file(fd, len, hash);
	if (rc != 0)
		return rc;
	memcpy(hash_out, hash, sizeof(hash));
	key.mv_data = hash;
	key.mv_size = sizeof(hash);
	val.mv_size = sizeof(h) + (size_t)len;
	rc = mdb_get(t->txn, t->st->objects, &key, &val);
	if (rc == MDB_SUCCESS) {
		/* Identical bytes are stored once. */
		if (is_new != NULL)
			*is_new = 0;
		return 0;
	}
	if (rc != MDB_NOTFOUND)
		return store__error(rc, "look up object");
	rc = store__reserve_space(t, val.mv_size + t->st->psize + 2 * STORE_HASH_LEN);
	if (rc != 0)
		return rc;
	val.mv_size = sizeof(h) + (size_t)len;
	/* MDB_RESERVE: LMDB makes room and we write the header and the bytes
	 * into place, one copy. */
	rc = mdb_put(t->txn, t->st->objects, &key, &val, MDB_NOOVERWRITE | MDB_RESERVE);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "put object");
	memset(&h, 0, sizeof(h));
	h.magic = OBJECT_MAGIC;
	h.version = OBJECT_VERSION;
	h.size = len;
	h.created = now;
	memcpy(h.content_type, content_type, ctype_len);
	memcpy(val.mv_data, &h, sizeof(h));
	in_file = len >= PWRITE_MIN && value_file_offset(t->st, &val, &off) == 0;
	off += sizeof(h);
	if (len == 0)
		rc = 0;
	else if (bytes == NULL && in_file)
		rc = fileio_copy(fd, t->st->fd, (int64_t)off, len);
	else if (bytes == NULL)
		rc = read_whole(fd, (char *)val.mv_data + sizeof(h), (size_t)len);
	else if (in_file)
		rc = fileio_write(t->st->fd, bytes, (size_t)len, (int64_t)off);
	else
		memcpy((char *)val.mv_data + sizeof(h), bytes, (size_t)len);
	if (rc != 0) {
		log_error("store: cannot write an object of %llu bytes: %s", (unsigned long long)len,
		          strerror(-rc));
		return rc;
	}
	if (is_new != NULL)
		*is_new = 1;
	return 0;
}

int store_put_object(store_txn *t, const void *bytes, size_t len, const char *content_type,
                     int64_t now, uint8_t hash_out[STORE_HASH_LEN], int *is_new)
{
	if (bytes == NULL && len > 0)
		return SAYIN_EINVAL;
	return put_object(t, bytes, -1, len, content_type, now, hash_out, is_new);
}

int store_put_object_file(store_txn *t, int fd, uint64_t len, const char *content_type,
                          int64_t now, uint8_t hash_out[STORE_HASH_LEN], int *is_new)
{
	if (fd < 0)
		return SAYIN_EINVAL;
	return put_object(t, NULL, fd, len, content_type, now, hash_out, is_new);
}

int store_delete_object(store_txn *t, const uint8_t hash[STORE_HASH_LEN])
{
	MDB_val key = { STORE_HASH_LEN, (void *)hash };
	return store__error(mdb_del(t->txn, t->st->objects, &key, NULL), "delete object");
}

int store_get_object(store_txn *t, const uint8_t hash[STORE_HASH_LEN], store_object *out)
{
	struct object_header h;
	MDB_val key = { STORE_HASH_LEN, (void *)hash }, val;
	int rc = mdb_get(t->txn, t->st->objects, &key, &val);
	if (rc != MDB_SUCCESS)
		return store__error(rc, "get object");
	if (val.mv_size < sizeof(h))
		return SAYIN_ECORRUPT;
	memcpy(&h, val.mv_data, sizeof(h));
	if (h.magic != OBJECT_MAGIC || h.version != OBJECT_VERSION ||
	    h.size != val.mv_size - sizeof(h))
		return SAYIN_ECORRUPT;
	memcpy(out->hash, hash, STORE_HASH_LEN);
	out->data = (const char *)val.mv_data + sizeof(h);
	out->size = h.size;
	/* The NUL-terminated type inside the map, valid as long as the txn. */
	out->content_type = (const char *)val.mv_data + offsetof(struct object_header, content_type);
	out->created = h.created;
	return 0;
}

void store_hash_to_hex(const uint8_t hash[STORE_HASH_LEN], char *hex)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < STORE_HASH_LEN; i++) {
		hex[2 * i] = digits[hash[i] >> 4];
		hex[2 * i + 1] = digits[hash[i] & 15];
	}
	hex[STORE_HASH_HEX_LEN] = '\0';
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

int store_hash_from_hex(const char *hex, size_t len, uint8_t hash[STORE_HASH_LEN])
{
	if (len != STORE_HASH_HEX_LEN)
		return SAYIN_EINVAL;
	for (size_t i = 0; i < STORE_HASH_LEN; i++) {
		int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return SAYIN_EINVAL;
		hash[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}
