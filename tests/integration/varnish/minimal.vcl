# A minimal Varnish 7.1 configuration in front of sayin-origin, for the
# integration tests (tests/integration/test_varnish.py). Everything not
# written here is Varnish's builtin VCL: caching follows the origin's
# Cache-Control (s-maxage, then max-age; stale-while-revalidate as grace),
# the hash is the default (URL + Host), Vary is honoured, and objects are
# fetched whole and Range requests answered from the cache.
#
# varnishd runs with -p http_gzip_support=off, so Varnish neither rewrites
# Accept-Encoding nor gunzips: the origin picks the encoding and Varnish
# keeps one variant per Accept-Encoding value, as the origin's
# Vary: Accept-Encoding says.
#
# The test fixture renders @ORIGIN_PORT@ and may replace the line
# "#@NAME_TTL@" with statements (the revalidation test shortens the lifetime
# of names to one second).
vcl 4.1;

backend origin {
    .host = "127.0.0.1";
    .port = "@ORIGIN_PORT@";
}

sub vcl_backend_fetch {
    # A cacheable fetch asks for the whole object (Varnish does this on its
    # own; said here so nobody "fixes" it): ranges are cut from the cache.
    if (!bereq.uncacheable) {
        unset bereq.http.Range;
        unset bereq.http.If-Range;
    }
}

sub vcl_backend_response {
    # Names (feeds, pages) change on publish: keep them past their lifetime
    # so a stale copy is revalidated with a conditional request (304)
    # instead of being fetched again. Immutable objects need no keep.
    if (beresp.http.Cache-Control !~ "immutable") {
        #@NAME_TTL@
        set beresp.keep = 1h;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
