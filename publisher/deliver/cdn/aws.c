/* cdn/aws: credentials shared by the AWS drivers. */
#include "deliver/cdn/aws.h"

#include "core/error.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

int cdn_aws_configure(const config *cfg, const char *who, cdn_aws *out, char *err, size_t errlen)
{
	const char *id = config_get(cfg, "aws-access-key-id");
	const char *secret = config_get(cfg, "aws-secret-access-key");
	const char *region = config_get(cfg, "aws-region");

	if (id == NULL || *id == '\0' || secret == NULL || *secret == '\0') {
		snprintf(err, errlen, "%s: --aws-access-key-id and --aws-secret-access-key are required",
		         who);
		return SAYIN_ECONFIG;
	}
	if (strchr(id, ':') != NULL || strlen(id) + strlen(secret) + 2 > sizeof(out->userpwd) ||
	    region == NULL || *region == '\0' || strlen(region) >= sizeof(out->region)) {
		snprintf(err, errlen, "%s: malformed AWS credentials or region", who);
		return SAYIN_ECONFIG;
	}
	if (snprintf(out->userpwd, sizeof(out->userpwd), "%s:%s", id, secret) < 0)
		return SAYIN_ECONFIG; /* lengths were checked above */
	snprintf(out->region, sizeof(out->region), "%s", region);
	return 0;
}

void cdn_aws_sha256_hex(const void *bytes, size_t len, char hex[65])
{
	static const char d[] = "0123456789abcdef";
	unsigned char md[32];
	unsigned int n = 0;
	EVP_Digest(bytes, len, md, &n, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++) {
		hex[2 * i] = d[md[i] >> 4];
		hex[2 * i + 1] = d[md[i] & 15];
	}
	hex[64] = '\0';
}
