/* fuzz_social_answer: how the social drivers (publisher/deliver/social/)
 * read X's and Facebook's answers: the classification of any answer (with
 * the rate-limit and usage headers), the new post's id, the account's id
 * and the reconcile search through the latest posts. The functions x.c and
 * facebook.c call from their answer callbacks.
 *
 * Input: byte 0 picks the reader, bytes 1-2 the status; then BODY NUL
 * HEADER NUL HEADER2 (the x-rate-limit-reset, or x-app-usage and
 * x-page-usage; absent when the input has no such field). Checks: an id is
 * returned only when found, NUL-terminated in its buffer; a failure
 * classification carries an error text. */
#include "deliver/social/facebook.h"
#include "deliver/social/x.h"
#include "split.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define POST_URL "https://voice.example/p/01HZX3K9"

static void check_id(int rc, const char *id, size_t idlen)
{
	if (rc > 0 && (id[0] == '\0' || strnlen(id, idlen) == idlen))
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *field[3];
	char *block, id[32];
	social_result res;
	long status;
	int n, rc;

	if (size < 3)
		return 0;
	status = data[1] | (long)data[2] << 8;
	n = fuzz_split(data + 3, size - 3, &block, field, 3);
	if (n < 0)
		return 0;
	memset(&res, 0, sizeof(res));
	memset(id, 'x', sizeof(id));
	switch (data[0] % 8) {
	case 0:
		if (x_classify(NULL, status, field[0], n > 1 ? field[1] : NULL, &res) ==
		            X_OUTCOME_FAILED &&
		    res.error[0] == '\0')
			abort();
		break;
	case 1:
		rc = x_created_id(field[0], id, sizeof(id));
		check_id(rc == 0, id, sizeof(id));
		break;
	case 2:
		rc = x_me_id(field[0], id, sizeof(id));
		check_id(rc == 0, id, sizeof(id));
		break;
	case 3:
		rc = x_find_post(field[0], n > 1 ? field[1] : POST_URL, id, sizeof(id));
		check_id(rc == 1, id, sizeof(id));
		break;
	case 4:
		if (facebook_classify(NULL, status, field[0], n > 1 ? field[1] : NULL,
		                      n > 2 ? field[2] : NULL, &res) == FACEBOOK_OUTCOME_FAILED &&
		    res.error[0] == '\0')
			abort();
		break;
	case 5:
		rc = facebook_created_id(field[0], id, sizeof(id));
		check_id(rc == 0, id, sizeof(id));
		break;
	case 6:
		rc = facebook_find_post(field[0], n > 1 ? field[1] : POST_URL, id, sizeof(id));
		check_id(rc == 1, id, sizeof(id));
		break;
	default:
		rc = facebook_usage_exhausted(field[0]);
		if (rc != 0 && rc != 1)
			abort();
		break;
	}
	free(block);
	return 0;
}
