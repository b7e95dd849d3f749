/* test_oauth1: OAuth 1.0a HMAC-SHA1 signing against the published vectors
 * (X's "Creating a signature", RFC 5849 sections 1.2 and 3.4.1), byte for
 * byte; encoding, base string URIs, the header, nonces, bad input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "deliver/social/oauth1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* X's documented example (developer.x.com, "Creating a signature"). */
#define X_STATUS_BODY "status=Hello%20Ladies%20%2B%20Gentlemen%2C%20a%20signed%20OAuth%20request%21"
#define X_BASE_TAIL                                                                      \
	"&include_entities%3Dtrue%26oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%" \
	"3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26oauth_signature_method%3DHMAC-SHA1%26"  \
	"oauth_timestamp%3D1318622958%26oauth_token%3D370773112-"                               \
	"GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%"      \
	"2520Ladies%2520%252B%2520Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"

static oauth1_request x_example(const char *url)
{
	oauth1_request r = {
		.method = "POST",
		.url = url,
		.form_body = X_STATUS_BODY,
		.form_body_len = strlen(X_STATUS_BODY),
		.consumer_key = "xvz1evFS4wEEPTGEFPHBog",
		.consumer_secret = "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
		.token = "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
		.token_secret = "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE",
		.nonce = "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
		.timestamp = 1318622958,
		.with_version = 1,
	};
	return r;
}

/* A request with the short test credentials: ck/cs, token t/ts, nonce n. */
static oauth1_request short_request(const char *method, const char *url, int64_t timestamp,
                                    int with_version)
{
	oauth1_request r = {
		.method = method,
		.url = url,
		.consumer_key = "ck",
		.consumer_secret = "cs",
		.token = "t",
		.token_secret = "ts",
		.nonce = "n",
		.timestamp = timestamp,
		.with_version = with_version,
	};
	return r;
}

/* Signs r and checks what was signed. */
static void assert_base_string(const oauth1_request *r, const char *want)
{
	oauth1_signature s;
	assert_int_equal(oauth1_sign(r, &s), 0);
	assert_string_equal(s.base_string, want);
	oauth1_signature_free(&s);
}

/* Signs r and checks the base string and the signature; the caller checks
 * the rest of *s, then frees it. */
static void sign_expecting(const oauth1_request *r, const char *base_string, const char *signature,
                           oauth1_signature *s)
{
	assert_int_equal(oauth1_sign(r, s), 0);
	assert_string_equal(s->base_string, base_string);
	assert_string_equal(s->signature, signature);
}

static void test_x_documented_example(void **state)
{
	oauth1_request r = x_example("https://api.twitter.com/1.1/statuses/update.json?include_entities=true");
	oauth1_signature s;
	(void)state;

	sign_expecting(&r, "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json" X_BASE_TAIL,
	               "hCtSmYh+iHYCEqBWrE7C7hYmtUk=", &s);
	assert_string_equal(s.key, "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw&"
	                           "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE");
	assert_string_equal(s.authorization,
	                    "OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", "
	                    "oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\", "
	                    "oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\", "
	                    "oauth_signature_method=\"HMAC-SHA1\", "
	                    "oauth_timestamp=\"1318622958\", "
	                    "oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\", "
	                    "oauth_version=\"1.0\"");
	oauth1_signature_free(&s);
}

/* The same page once showed the /1/ URL; its signature is the other known
 * value (a second, independent check of the same computation). */
static void test_x_documented_example_v1_url(void **state)
{
	oauth1_request r = x_example("https://api.twitter.com/1/statuses/update.json?include_entities=true");
	oauth1_signature s;
	(void)state;

	sign_expecting(&r, "POST&https%3A%2F%2Fapi.twitter.com%2F1%2Fstatuses%2Fupdate.json" X_BASE_TAIL,
	               "tnnArxj06cWHq44gCs1OSKk/jLY=", &s);
	oauth1_signature_free(&s);
}

/* RFC 5849 section 1.2: the photo request, realm "Photos", no oauth_version. */
static void test_rfc5849_section_1_2(void **state)
{
	oauth1_request r = {
		.method = "GET",
		.url = "http://photos.example.net/photos?file=vacation.jpg&size=original",
		.consumer_key = "dpf43f3p2l4k3l03",
		.consumer_secret = "kd94hf93k423kf44",
		.token = "nnch734d00sl2jdk",
		.token_secret = "pfkkdhi9sl3r4s00",
		.realm = "Photos",
		.nonce = "chapoH",
		.timestamp = 137131202,
	};
	oauth1_signature s;
	(void)state;

	sign_expecting(&r,
	               "GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26"
	               "oauth_consumer_key%3Ddpf43f3p2l4k3l03%26oauth_nonce%3DchapoH%26"
	               "oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131202%26"
	               "oauth_token%3Dnnch734d00sl2jdk%26size%3Doriginal",
	               "MdpQcU8iPSUjWoN/UDMsK2sui9I=", &s);
	assert_string_equal(s.key, "kd94hf93k423kf44&pfkkdhi9sl3r4s00");
	/* The value the RFC's header carries, as the header must carry it. */
	assert_non_null(strstr(s.authorization, "oauth_signature=\"MdpQcU8iPSUjWoN%2FUDMsK2sui9I%3D\""));
	assert_true(strncmp(s.authorization, "OAuth realm=\"Photos\", ", 22) == 0);
	assert_null(strstr(s.authorization, "oauth_version"));
	oauth1_signature_free(&s);
}

/* RFC 5849 section 3.4.1.1: query, protocol parameters and a form body
 * with '+', a name without '=', a repeated name and a double-encoded value. */
static void test_rfc5849_section_3_4_1_1_base_string(void **state)
{
	const char *body = "c2&a3=2+q";
	oauth1_request r = {
		.method = "post",
		.url = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
		.form_body = body,
		.form_body_len = strlen(body),
		.consumer_key = "9djdj82h48djs9d2",
		.consumer_secret = "j49sj3j29djd",
		.token = "kkk9d7dh3k39sjv7",
		.token_secret = "dh893hdasih9",
		.realm = "Example",
		.nonce = "7d8f3e4a",
		.timestamp = 137131201,
	};
	(void)state;

	assert_base_string(&r, "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q"
	                       "%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_"
	                       "key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m"
	                       "ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk"
	                       "9d7dh3k39sjv7");
}

/* POST /2/tweets sends JSON: the body is not signed, so two bodies give
 * one signature, equal to that of the same request with no body. */
static void test_json_body_is_not_signed(void **state)
{
	oauth1_request r = short_request("POST", "https://api.twitter.com/2/tweets", 1700000000, 1);
	oauth1_request no_body = r;
	oauth1_signature a, b;
	(void)state;

	assert_int_equal(oauth1_sign(&r, &a), 0);
	assert_int_equal(oauth1_sign(&r, &b), 0);
	assert_string_equal(a.signature, b.signature);
	assert_string_equal(a.base_string,
	                    "POST&https%3A%2F%2Fapi.twitter.com%2F2%2Ftweets&oauth_consumer_key%3Dck%26"
	                    "oauth_nonce%3Dn%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%"
	                    "3D1700000000%26oauth_token%3Dt%26oauth_version%3D1.0");
	oauth1_signature_free(&a);
	oauth1_signature_free(&b);

	/* Whereas a form body is signed: the signature changes. */
	r.form_body = "text=hello";
	r.form_body_len = strlen(r.form_body);
	assert_int_equal(oauth1_sign(&r, &b), 0);
	assert_non_null(strstr(b.base_string, "text%3Dhello"));
	assert_int_equal(oauth1_sign(&no_body, &a), 0);
	assert_string_not_equal(a.signature, b.signature);
	oauth1_signature_free(&a);
	oauth1_signature_free(&b);
}

static void test_percent_encoding(void **state)
{
	char *e;
	(void)state;
	e = oauth1_encode("AZaz09-._~", 10);
	assert_string_equal(e, "AZaz09-._~");
	free(e);
	/* Reserved characters, space (never '+'), '*', and UTF-8 bytes in uppercase hex. */
	e = oauth1_encode(" !*'();:@&=+$,/?#[]%", 20);
	assert_string_equal(e, "%20%21%2A%27%28%29%3B%3A%40%26%3D%2B%24%2C%2F%3F%23%5B%5D%25");
	free(e);
	e = oauth1_encode("\xc3\xa9\xe2\x98\x83\x00x", 7);
	assert_string_equal(e, "%C3%A9%E2%98%83%00x");
	free(e);
	e = oauth1_encode("", 0);
	assert_string_equal(e, "");
	free(e);
}

static void check_uri(const char *url, const char *want)
{
	int err = 1;
	char *u = oauth1_base_uri(url, &err);
	if (want == NULL) {
		assert_null(u);
		assert_int_equal(err, -EINVAL);
		return;
	}
	assert_non_null(u);
	assert_int_equal(err, 0);
	assert_string_equal(u, want);
	free(u);
}

/* RFC 5849 section 3.4.1.2 and its two examples. */
static void test_base_string_uri(void **state)
{
	(void)state;
	check_uri("http://EXAMPLE.COM:80/r%20v/X?id=123", "http://example.com/r%20v/X");
	check_uri("https://www.example.net:8080/?q=1", "https://www.example.net:8080/");
	check_uri("HTTPS://Api.X.com:443/2/tweets", "https://api.x.com/2/tweets");
	check_uri("http://127.0.0.1:8443/2/users/me#frag", "http://127.0.0.1:8443/2/users/me");
	check_uri("https://host:80/p", "https://host:80/p");
	check_uri("http://user:pw@Host.example", "http://host.example/");
	check_uri("http://[::1]:9000/a", "http://[::1]:9000/a");
	check_uri("ftp://example.com/", NULL);
	check_uri("example.com/x", NULL);
	check_uri("http:///x", NULL);
}

/* The nonce is random when not given: two signatures differ, each nonce
 * is 32 hex digits, and the timestamp is now. */
static void test_random_nonce_and_clock(void **state)
{
	oauth1_request r = { .method = "GET", .url = "https://api.x.com/2/users/me",
		             .consumer_key = "ck", .consumer_secret = "cs" };
	oauth1_signature a, b;
	const char *na, *nb;
	const char *ts;
	long long when;
	(void)state;

	assert_int_equal(oauth1_sign(&r, &a), 0);
	assert_int_equal(oauth1_sign(&r, &b), 0);
	na = strstr(a.authorization, "oauth_nonce=\"");
	nb = strstr(b.authorization, "oauth_nonce=\"");
	assert_non_null(na);
	assert_non_null(nb);
	na += 13;
	nb += 13;
	assert_int_equal(strspn(na, "0123456789abcdef"), 32);
	assert_int_equal(na[32], '"');
	assert_memory_not_equal(na, nb, 32);
	assert_string_not_equal(a.signature, b.signature);
	/* No token: no oauth_token, and the key ends with '&'. */
	assert_null(strstr(a.authorization, "oauth_token"));
	assert_string_equal(a.key, "cs&");
	ts = strstr(a.base_string, "oauth_timestamp%3D");
	assert_non_null(ts);
	when = strtoll(ts + 18, NULL, 10);
	assert_true(llabs(when - (long long)time(NULL)) <= 5);
	oauth1_signature_free(&a);
	oauth1_signature_free(&b);
}

/* Query parameters are signed with the oauth ones, sorted by name then
 * value (as X's GET /2/users/:id/tweets needs). */
static void test_query_sorted_by_name_then_value(void **state)
{
	oauth1_request r = short_request(
		"GET",
		"https://api.x.com/2/users/12/tweets?max_results=100&tweet.fields=entities&a=2&a=10", 1,
		0);
	(void)state;
	assert_base_string(&r, "GET&https%3A%2F%2Fapi.x.com%2F2%2Fusers%2F12%2Ftweets&a%3D10%26a%3D2%26"
	                       "max_results%3D100%26oauth_consumer_key%3Dck%26oauth_nonce%3Dn%26"
	                       "oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1%26oauth_token%"
	                       "3Dt%26tweet.fields%3Dentities");
}

static void test_bad_input(void **state)
{
	oauth1_request r = { .method = "GET", .url = "https://x/?a=%4", .consumer_key = "k",
		             .consumer_secret = "s" };
	oauth1_signature s;
	(void)state;
	assert_int_equal(oauth1_sign(&r, &s), -EINVAL);
	oauth1_signature_free(&s);
	r.url = "https://x/?a=%zz";
	assert_int_equal(oauth1_sign(&r, &s), -EINVAL);
	r.url = "mailto:a@b";
	assert_int_equal(oauth1_sign(&r, &s), -EINVAL);
	r.url = "https://x/";
	r.consumer_secret = NULL;
	assert_int_equal(oauth1_sign(&r, &s), -EINVAL);
	oauth1_signature_free(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_x_documented_example),
		cmocka_unit_test(test_x_documented_example_v1_url),
		cmocka_unit_test(test_rfc5849_section_1_2),
		cmocka_unit_test(test_rfc5849_section_3_4_1_1_base_string),
		cmocka_unit_test(test_json_body_is_not_signed),
		cmocka_unit_test(test_percent_encoding),
		cmocka_unit_test(test_base_string_uri),
		cmocka_unit_test(test_random_nonce_and_clock),
		cmocka_unit_test(test_query_sorted_by_name_then_value),
		cmocka_unit_test(test_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
