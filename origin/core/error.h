/* error: sayin's error codes and the one function that turns any code into text.
 *
 * Every sayin function returns an int: 0 on success, a negative errno value
 * (passed through unchanged, as libuv does) or one of the SAYIN_E* codes below,
 * which live in a reserved range far from any errno. Library codes (MDB_*,
 * CURLcode, AVERROR) are translated at the owning module's edge and never leak. */
#ifndef SAYIN_ERROR_H
#define SAYIN_ERROR_H

enum {
	SAYIN_EBASE = -30000,
	SAYIN_ESTOREFULL = SAYIN_EBASE, /* the LMDB map is full: raise map-size */
	SAYIN_ESTORE,                   /* the store failed for another reason (logged) */
	SAYIN_ECORRUPT,                 /* a stored record does not parse */
	SAYIN_EREADONLY,                /* a write was attempted on a read-only store */
	SAYIN_ENOTFOUND,                /* no such object, name, post or author */
	SAYIN_EREADERS,                 /* too many concurrent read transactions */
	SAYIN_EFORMAT,                  /* input is not in a format we accept */
	SAYIN_ETRUNCATED,               /* input ends before its own headers say it should */
	SAYIN_EUNSUPPORTED,             /* input format recognised, encoding not supported */
	SAYIN_EEMPTY,                   /* input holds no audio samples */
	SAYIN_EENCODE,                  /* the encoder or muxer failed (logged) */
	SAYIN_ECONFIG,                  /* bad setting or command-line usage */
	SAYIN_EINVAL,                   /* bad argument, e.g. an invalid handle */
	SAYIN_EBADDATA,                 /* input in a known format whose data does not decode */
	SAYIN_ETOOLONG,                 /* input lasts longer than the duration limit */
	SAYIN_ETOOLARGE,                /* input has more bytes than the size limit */
	SAYIN_ESILENT,                  /* input is silent (below the loudness gate throughout) */
	SAYIN_EDECODER,                 /* the decoder process crashed or timed out */
	SAYIN_ESTORENEWER,              /* the store's format is newer than this program's */
	SAYIN_ESTOREOLDER,              /* the store's format is older: run sayin-publisher migrate */
	SAYIN_ELAST
};

/* Returns a static, human-readable description of code (never NULL).
 * Negative errno values are described with strerror(). */
const char *sayin_strerror(int code);

#endif
