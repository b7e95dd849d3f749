/* error: text for sayin's error codes and for negative errno values. */
#include "core/error.h"

#include <string.h>

const char *sayin_strerror(int code)
{
	switch (code) {
	case 0: return "success";
	case SAYIN_ESTOREFULL: return "store full (raise map-size)";
	case SAYIN_ESTORE: return "store error";
	case SAYIN_ECORRUPT: return "stored record is corrupt";
	case SAYIN_EREADONLY: return "store is read-only";
	case SAYIN_ENOTFOUND: return "not found";
	case SAYIN_EREADERS: return "too many concurrent readers";
	case SAYIN_EFORMAT: return "unrecognised input format";
	case SAYIN_ETRUNCATED: return "input is truncated";
	case SAYIN_EUNSUPPORTED: return "unsupported encoding";
	case SAYIN_EEMPTY: return "input has no audio samples";
	case SAYIN_EENCODE: return "encoder failed";
	case SAYIN_ECONFIG: return "configuration error";
	case SAYIN_EINVAL: return "invalid argument";
	case SAYIN_EBADDATA: return "corrupt data";
	case SAYIN_ETOOLONG: return "too long";
	case SAYIN_ETOOLARGE: return "too large";
	case SAYIN_ESILENT: return "silent";
	case SAYIN_EDECODER: return "decoder crashed or timed out";
	case SAYIN_ESTORENEWER: return "store format is newer than this program's (upgrade the program)";
	case SAYIN_ESTOREOLDER: return "store format is older than this program's (run sayin-publisher migrate)";
	default: break;
	}
	if (code < 0 && code > SAYIN_EBASE)
		return strerror(-code);
	return "unknown error";
}
