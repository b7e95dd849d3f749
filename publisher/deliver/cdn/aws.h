/* cdn/aws: the AWS credentials and region the cloudfront and s3 drivers
 * share; requests are signed with Signature Version 4 by libcurl
 * (net_request.aws_sigv4). A cdn_aws is a plain value inside the driver's
 * state, filled on the main thread (configure), read on the delivery
 * loop's. */
#ifndef SAYIN_CDN_AWS_H
#define SAYIN_CDN_AWS_H

#include "core/config.h"

#include <stddef.h>

typedef struct cdn_aws {
	char userpwd[512];   /* "ACCESS_KEY_ID:SECRET_ACCESS_KEY" */
	char region[64];
} cdn_aws;

/* Reads aws-access-key-id, aws-secret-access-key and aws-region. Returns 0,
 * or SAYIN_ECONFIG naming the missing setting (who names the driver). */
int cdn_aws_configure(const config *cfg, const char *who, cdn_aws *out, char *err, size_t errlen);

/* Lowercase hex SHA-256 of bytes into hex (65 bytes). */
void cdn_aws_sha256_hex(const void *bytes, size_t len, char hex[65]);

#endif
