/* fuzz_cdn_answer: how the CDN drivers (publisher/deliver/cdn/) read the
 * answers to their requests: each driver's check (Cloudflare's JSON,
 * CloudFront's and S3's XML error, the status rules of Fastly, Varnish,
 * nginx and prewarm's plain 2xx) and the batch's Retry-After reading. The
 * same functions the drivers hand to cdn_batch_send.
 *
 * Input: byte 0 picks the check (or Retry-After), bytes 1-2 the status
 * (little-endian), the rest is the body (NUL-terminated as net gives it)
 * or the Retry-After value. Checks the cdn_check_fn contract: 0 or -1, a
 * failure says why, and the error text is terminated in its buffer. */
#include "deliver/cdn/cdn.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const cdn_check_fn checks[] = { cdn_check_2xx,    cdn_cloudflare_check,
	                               cdn_cloudfront_check, cdn_s3_check,
	                               cdn_fastly_check, cdn_varnish_check,
	                               cdn_nginx_check };
#define N_CHECKS (sizeof(checks) / sizeof(checks[0]))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned pick;
	char *body;

	if (size < 3)
		return 0;
	pick = data[0] % (N_CHECKS + 1);
	body = malloc(size - 2);
	if (body == NULL)
		return 0;
	memcpy(body, data + 3, size - 3);
	body[size - 3] = '\0';
	if (pick == N_CHECKS) {
		const int64_t now_ms = 1700000000000LL;
		int64_t at = cdn_retry_after_value(body, now_ms);
		(void)at;
	} else {
		net_response res = { .status = data[1] | (long)data[2] << 8, .body = body,
			             .body_len = size - 3 };
		cdn_result out = { 0 };
		int rc = checks[pick](&res, NULL, &out);
		if (rc != 0 && rc != -1)
			abort();
		if (rc == -1 && out.error[0] == '\0')
			abort();
		if (memchr(out.error, '\0', sizeof(out.error)) == NULL)
			abort();
	}
	free(body);
	return 0;
}
