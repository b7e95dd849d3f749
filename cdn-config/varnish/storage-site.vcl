# The site part of sayin's Varnish edge when its backend is an S3-compatible
# bucket that the publisher's s3 driver fills, not sayin-origin. Install it
# as site.vcl next to an unchanged sayin.vcl (which includes ./site.vcl):
# the caching policy stays sayin.vcl's, and this file only translates
# between the fan's URLs and the bucket's keys. See cdn-config/README.md,
# "Storage as the backend".
#
# Varnish runs the bodies of a built-in subroutine defined twice in the
# order they appear, and sayin.vcl includes this file before its own: so
# vcl_backend_fetch, vcl_backend_response and vcl_backend_error here run
# first, and fall through (no return) to sayin.vcl's, except where said
# (vcl_recv and vcl_synth for OPTIONS).
#
# What it does:
# - the URL sent to the bucket is "/" BUCKET + the normalized path (no
#   query string: sayin.vcl drops it), with "index.html" after a final "/"
#   (so /u/H/ is the stored u/H/index.html, / is index.html), and a name's
#   variant prefix from the fan's normalized Accept-Encoding (_br/, _gzip/
#   or none; objects /a/... have one key). Every URL sent therefore names
#   one key: no fan's request ever reaches a bucket listing (GET /BUCKET,
#   /BUCKET/, ?list-type=..., ?prefix=...), which is checked again below;
# - the object's metadata becomes the origin's headers again:
#   x-amz-meta-cdn-cache-control is CDN-Cache-Control and
#   x-amz-meta-surrogate-key is Surrogate-Key (sayin.vcl turns it into xkey
#   keys and strips both from fans); a name varies by Accept-Encoding; the
#   CORS and nosniff headers the origin adds are added; S3's own x-amz-*
#   headers are dropped;
# - a missing key is the origin's 404 ("not found", cached ten seconds),
#   also when the bucket answers 403 (S3 does for a missing key when the
#   reader may not list the bucket: a public-read bucket without
#   s3:ListBucket, as it should be);
# - OPTIONS (CORS preflight) is answered here as sayin-origin answers it;
# - storage down or failing (connection refused, timeout, 5xx) is the
#   origin down: sayin.vcl serves stale names for their stale-if-error
#   time, and objects as long as they are cached.
#
# The bucket must be readable without a signature (public-read on keys, or
# a bucket policy allowing s3:GetObject to the edges' addresses): Varnish
# does not sign requests. Range, conditional requests and every variant are
# answered from the cache, as in front of sayin-origin.

# The bucket's endpoint, path-style (the publisher's s3-endpoint). Named
# origin because sayin.vcl's policy fetches from "origin". No health probe:
# a bucket has no /healthz, and a failed fetch already falls back to the
# stale copy (each attempt costs at most .connect_timeout when the endpoint
# is unreachable).
backend origin {
    .host = "127.0.0.1";
    .port = "4568";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
}

# Addresses allowed to PURGE (URLs and surrogate keys). The publisher's
# purge driver connects from here.
acl purgers {
    "127.0.0.1";
    "::1";
}

# The bucket (the publisher's s3-bucket) and the Host header its endpoint
# expects.
sub sayin_storage_bucket {
    set bereq.http.x-sayin-bucket = "sayin-media";
    set bereq.http.Host = "127.0.0.1:4568";
}

sub vcl_recv {
    # A bucket does not answer CORS preflights the way the origin does (S3
    # only with a CORS configuration of its own): answered here, as
    # sayin-origin answers OPTIONS, without asking the bucket.
    if (req.method == "OPTIONS") {
        return (synth(204, "No Content"));
    }
}

sub vcl_synth {
    if (req.method == "OPTIONS" && resp.status == 204) {
        set resp.http.Allow = "GET, HEAD, OPTIONS";
        set resp.http.Access-Control-Allow-Origin = "*";
        if (req.http.Origin && req.http.Access-Control-Request-Method) {
            set resp.http.Access-Control-Allow-Methods = "GET, HEAD, OPTIONS";
            set resp.http.Access-Control-Allow-Headers = "Range, If-None-Match, If-Modified-Since, If-Range";
            set resp.http.Access-Control-Max-Age = "86400";
        }
        set resp.http.Cache-Control = "no-store";
        set resp.http.X-Cache = "SYNTH";
        unset resp.http.Content-Type;
        set resp.body = "";
        return (deliver);
    }
}

sub vcl_backend_fetch {
    call sayin_storage_bucket;
    if (bereq.url ~ "^/a/") {
        # Objects: one key, identity.
        set bereq.url = "/" + bereq.http.x-sayin-bucket + bereq.url;
    } elsif (bereq.http.Accept-Encoding == "br") {
        set bereq.url = "/" + bereq.http.x-sayin-bucket + "/_br" + bereq.url;
    } elsif (bereq.http.Accept-Encoding == "gzip") {
        set bereq.url = "/" + bereq.http.x-sayin-bucket + "/_gzip" + bereq.url;
    } else {
        set bereq.url = "/" + bereq.http.x-sayin-bucket + bereq.url;
    }
    if (bereq.url ~ "/$") {
        set bereq.url = bereq.url + "index.html";
    }
    # One key, never a listing: a key after "/BUCKET/", no query string,
    # no final "/". sayin.vcl's URL rules make anything else impossible;
    # should they change, the fan gets a 404 rather than a listing.
    if (bereq.url !~ "^/[a-z0-9.-]+/[^?]*[^/?]$") {
        set bereq.http.x-sayin-storage-miss = "1";
        return (error(404, "Not Found"));
    }
    unset bereq.http.x-sayin-bucket;
    # Nothing of the fan's goes to the bucket but what names the bytes
    # (Accept-Encoding stays: Varnish records Vary from the backend
    # request, and S3 ignores it).
    unset bereq.http.Cookie;
    unset bereq.http.Authorization;
    unset bereq.http.X-Forwarded-For;
    unset bereq.http.Via;
}

sub vcl_backend_response {
    if (beresp.status == 404 || beresp.status == 403) {
        set bereq.http.x-sayin-storage-miss = "1";
        return (error(404, "Not Found"));
    }
    if (beresp.http.x-amz-meta-cdn-cache-control) {
        # A name: its CDN lifetime, and one variant per coding.
        set beresp.http.CDN-Cache-Control = beresp.http.x-amz-meta-cdn-cache-control;
        set beresp.http.Vary = "Accept-Encoding";
    }
    if (beresp.http.x-amz-meta-surrogate-key) {
        set beresp.http.Surrogate-Key = beresp.http.x-amz-meta-surrogate-key;
    }
    if (bereq.url ~ "/embed$") {
        # The player card page may be framed by the networks (as the
        # origin's origin/serve.c says), nothing else.
        set beresp.http.Content-Security-Policy = "frame-ancestors 'self' https://twitter.com https://*.twitter.com https://x.com https://*.x.com https://*.facebook.com";
    }
    unset beresp.http.x-amz-meta-cdn-cache-control;
    unset beresp.http.x-amz-meta-surrogate-key;
    unset beresp.http.x-amz-request-id;
    unset beresp.http.x-amz-id-2;
    unset beresp.http.x-amz-version-id;
    unset beresp.http.x-amz-server-side-encryption;
    unset beresp.http.x-amz-storage-class;
    unset beresp.http.x-amz-expiration;
    unset beresp.http.Server;
    if (beresp.status == 200 || beresp.status == 304) {
        set beresp.http.Accept-Ranges = "bytes";
        set beresp.http.X-Content-Type-Options = "nosniff";
        set beresp.http.Access-Control-Allow-Origin = "*";
        set beresp.http.Access-Control-Expose-Headers = "Content-Range, Content-Length, ETag";
    }
}

sub vcl_backend_error {
    # A key the bucket does not have: the origin's 404, cached as briefly.
    # (Anything else falls through to sayin.vcl: storage down.)
    if (bereq.http.x-sayin-storage-miss) {
        unset bereq.http.x-sayin-storage-miss;
        set beresp.status = 404;
        set beresp.http.Content-Type = "text/plain; charset=utf-8";
        set beresp.http.Cache-Control = "public, max-age=10";
        set beresp.http.X-Content-Type-Options = "nosniff";
        set beresp.http.Access-Control-Allow-Origin = "*";
        set beresp.ttl = 10s;
        set beresp.grace = 0s;
        set beresp.body = "not found" + {"
"};
        return (deliver);
    }
}

# Runs at the end of sayin.vcl's vcl_backend_response, after the policy set
# beresp.ttl, grace and keep: cap lifetimes here for a staging edge.
sub sayin_site_backend_response {
}
