# sayin's Varnish edge (Varnish 7.1, Debian 12, with varnish-modules for
# xkey): the caching policy in front of sayin-origin. The site part (the
# origin's address and probe, the purge ACL, local overrides) is in
# site.vcl next to this file; see cdn-config/README.md.
#
# Run varnishd with -p http_gzip_support=off: the origin already stores
# identity, gzip and brotli variants and picks one by Accept-Encoding. With
# gzip support on, Varnish rewrites every Accept-Encoding to "gzip" after
# vcl_recv (the brotli variant would never be fetched or found) and gunzips
# for clients that do not take gzip.
#
# What the policy does:
# - objects (/a/HASH.*) live as long as their Cache-Control says (a year,
#   immutable); names (feeds, pages) as long as CDN-Cache-Control says
#   (RFC 9213; a day from sayin-origin), and the publisher purges them on
#   change, by URL or by surrogate key;
# - a stale name is served while it is refreshed in the background for its
#   stale-while-revalidate time, and for its stale-if-error time when the
#   origin is sick, down or answers 5xx;
# - concurrent misses for one URL wait for one origin fetch (Varnish's
#   waiting list): nothing here passes a cacheable request, and uncacheable
#   answers become hit-for-miss, never hit-for-pass;
# - Range requests are cut from the cached whole object;
# - variants follow the origin's Vary: Accept-Encoding, with Accept-Encoding
#   normalized to br, gzip or nothing, so a URL has at most three;
# - X-Cache says HIT, STALE, MISS or PASS.
vcl 4.1;

import std;
import purge;
import xkey;

include "./site.vcl";

sub vcl_recv {
    # Headers this VCL uses between its subroutines; a client's are dropped.
    if (req.restarts == 0) {
        unset req.http.x-sayin-cache;
        unset req.http.x-sayin-stale;
        unset req.http.x-sayin-revalidate;
        unset req.http.x-sayin-purged;
    }
    set req.backend_hint = origin;

    # sayin-origin ignores query strings: one cached copy per path, and a
    # random query cannot be used to reach the origin.
    set req.url = regsub(req.url, "\?.*$", "");

    if (req.method == "PURGE") {
        if (client.ip !~ purgers) {
            return (synth(403, "Forbidden"));
        }
        # Surrogate keys (the origin's Surrogate-Key), space-separated.
        if (req.http.xkey-purge) {
            set req.http.x-sayin-purged = xkey.purge(req.http.xkey-purge);
            return (synth(200, "Purged"));
        }
        if (req.http.xkey-softpurge) {
            set req.http.x-sayin-purged = xkey.softpurge(req.http.xkey-softpurge);
            return (synth(200, "Purged"));
        }
        # One URL, every variant: vcl_hit and vcl_miss purge its hash.
        return (hash);
    }

    # The origin's metrics are for its operators, not for fans.
    if (req.url == "/metrics") {
        return (synth(404, "Not Found"));
    }
    if (req.method == "OPTIONS") {
        return (pass);
    }
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405, "Method Not Allowed"));
    }

    # Everything the origin serves is public: a cookie or credentials from
    # the fan's browser must not turn a hit into a pass.
    unset req.http.Cookie;
    unset req.http.Authorization;

    # At most three variants per URL, matching the origin's choice (br
    # before gzip at equal weight; q=0 refuses a coding).
    if (req.http.Accept-Encoding ~ "(?i)(^|,)\s*br\s*(;\s*q\s*=\s*(1(\.0*)?|0?\.[0-9]*[1-9][0-9]*)\s*)?(,|$)") {
        set req.http.Accept-Encoding = "br";
    } elsif (req.http.Accept-Encoding ~ "(?i)(^|,)\s*gzip\s*(;\s*q\s*=\s*(1(\.0*)?|0?\.[0-9]*[1-9][0-9]*)\s*)?(,|$)") {
        set req.http.Accept-Encoding = "gzip";
    } else {
        unset req.http.Accept-Encoding;
    }

    # Set by vcl_hit: the stale copy is past its stale-while-revalidate
    # window and the origin is healthy, so fetch (conditionally) now. Set
    # by vcl_synth: that fetch failed, so any copy within grace will do.
    # (req.grace survives a restart: reset it.)
    if (req.http.x-sayin-stale) {
        unset req.http.x-sayin-revalidate;
        set req.grace = 3650d;
    } elsif (req.http.x-sayin-revalidate) {
        set req.grace = 0s;
    }
    return (hash);
}

sub vcl_hash {
    # The path alone: fans use the CDN's host name, the purge driver the
    # edge's address, and both must reach the same object. One site per
    # edge.
    hash_data(req.url);
    return (lookup);
}

sub sayin_purge_url {
    set req.http.x-sayin-purged = purge.hard();
    return (synth(200, "Purged"));
}

sub vcl_hit {
    if (req.method == "PURGE") {
        call sayin_purge_url;
    }
    if (obj.ttl > 0s) {
        set req.http.x-sayin-cache = "HIT";
        return (deliver);
    }
    # Stale. Within the object's stale-while-revalidate time, or when the
    # origin is sick (stale-if-error, up to the object's grace), deliver it
    # and let Varnish refresh it in the background. Otherwise look again
    # without grace: a miss that revalidates the kept copy, and a failure
    # of that fetch comes back here through vcl_synth's restart.
    if (!req.http.x-sayin-stale &&
        std.healthy(req.backend_hint) &&
        obj.ttl + std.duration(obj.http.x-sayin-swr, 0s) <= 0s) {
        set req.http.x-sayin-revalidate = "1";
        return (restart);
    }
    set req.http.x-sayin-cache = "STALE";
    return (deliver);
}

sub vcl_miss {
    if (req.method == "PURGE") {
        call sayin_purge_url;
    }
    set req.http.x-sayin-cache = "MISS";
}

sub vcl_pass {
    set req.http.x-sayin-cache = "PASS";
}

sub vcl_backend_fetch {
    # A cacheable fetch asks for the whole object (Varnish does this on its
    # own; said here so nobody "fixes" it): ranges are cut from the cache.
    if (!bereq.uncacheable) {
        unset bereq.http.Range;
        unset bereq.http.If-Range;
    }
    unset bereq.http.x-sayin-cache;
    unset bereq.http.x-sayin-stale;
    unset bereq.http.x-sayin-revalidate;
}

sub sayin_hit_for_miss {
    # Uncacheable: remember it for two minutes so the next requests go
    # straight to the origin in parallel (hit-for-miss), and a later
    # cacheable answer is still cached.
    set beresp.ttl = 120s;
    set beresp.uncacheable = true;
    return (deliver);
}

sub vcl_backend_response {
    if (bereq.uncacheable) {
        return (deliver);
    }
    # An origin error never replaces a cached copy: abandoning a background
    # refresh keeps the stale object, and a foreground fetch turns into a
    # 503 that vcl_synth retries from the stale copy.
    if (beresp.status >= 500) {
        return (abandon);
    }

    # The directives that govern this cache: CDN-Cache-Control (RFC 9213)
    # when present, else Cache-Control (from which Varnish already set
    # beresp.ttl: s-maxage, then max-age).
    if (beresp.http.CDN-Cache-Control) {
        set beresp.http.x-sayin-cc = beresp.http.CDN-Cache-Control;
        if (beresp.http.x-sayin-cc ~ "(?i)(^|[,\s])(no-store|no-cache|private)\b") {
            call sayin_hit_for_miss;
        }
        if (beresp.http.x-sayin-cc ~ "(?i)(^|[,\s])max-age\s*=\s*[0-9]+") {
            set beresp.ttl = std.duration(regsub(beresp.http.x-sayin-cc,
                "(?i)^(.*[,\s])?max-age\s*=\s*([0-9]+).*$", "\2") + "s", 0s);
        }
    } else {
        set beresp.http.x-sayin-cc = beresp.http.Cache-Control;
        if (beresp.http.x-sayin-cc ~ "(?i)(^|[,\s])(no-store|no-cache|private)\b") {
            call sayin_hit_for_miss;
        }
    }
    if (beresp.ttl <= 0s || beresp.http.Set-Cookie || beresp.http.Vary == "*") {
        call sayin_hit_for_miss;
    }

    # Grace is the longest a stale copy may be served: stale-if-error
    # (origin sick or failing). stale-while-revalidate, the time a stale
    # copy is served while the origin is healthy, is kept with the object
    # for vcl_hit.
    set beresp.http.x-sayin-swr = "0s";
    if (beresp.http.x-sayin-cc ~ "(?i)stale-while-revalidate\s*=\s*[0-9]+") {
        set beresp.http.x-sayin-swr = regsub(beresp.http.x-sayin-cc,
            "(?i)^.*stale-while-revalidate\s*=\s*([0-9]+).*$", "\1") + "s";
        set beresp.grace = std.duration(beresp.http.x-sayin-swr, 0s);
    }
    if (beresp.http.x-sayin-cc ~ "(?i)stale-if-error\s*=\s*[0-9]+") {
        set beresp.grace = std.duration(regsub(beresp.http.x-sayin-cc,
            "(?i)^.*stale-if-error\s*=\s*([0-9]+).*$", "\1") + "s", 0s);
    }
    unset beresp.http.x-sayin-cc;

    # Names change: keep a copy past its lifetime so that the refresh is a
    # conditional request (a 304 costs the origin no body).
    if (beresp.http.Cache-Control !~ "(?i)immutable" &&
        (beresp.http.ETag || beresp.http.Last-Modified)) {
        set beresp.keep = 1d;
    }

    # Surrogate keys for xkey.purge: the origin's Surrogate-Key, as is.
    if (beresp.http.Surrogate-Key) {
        set beresp.http.xkey = beresp.http.Surrogate-Key;
    }

    call sayin_site_backend_response;
    return (deliver);
}

sub vcl_backend_error {
    # The origin is down or sick: see vcl_backend_response's 5xx.
    return (abandon);
}

sub vcl_deliver {
    if (req.http.x-sayin-cache) {
        set resp.http.X-Cache = req.http.x-sayin-cache;
    } else {
        set resp.http.X-Cache = "MISS";
    }
    unset resp.http.xkey;
    unset resp.http.x-sayin-swr;
}

sub vcl_synth {
    # A failed fetch (origin down, 5xx, timeout) of a GET or HEAD: look
    # again accepting any stale copy within its grace (stale-if-error).
    if (resp.status == 503 && !req.http.x-sayin-stale &&
        (req.method == "GET" || req.method == "HEAD") && req.restarts < 3) {
        set req.http.x-sayin-stale = "1";
        return (restart);
    }
    set resp.http.X-Cache = "SYNTH";
    if (req.method == "PURGE") {
        set resp.http.Content-Type = "text/plain; charset=utf-8";
        set resp.http.Cache-Control = "no-store";
        if (resp.status == 200) {
            set resp.http.X-Purged = req.http.x-sayin-purged;
            set resp.body = "purged " + req.http.x-sayin-purged + " objects" + {"
"};
        } else {
            set resp.body = "purge refused" + {"
"};
        }
        return (deliver);
    }
    if (resp.status == 405) {
        set resp.http.Allow = "GET, HEAD, OPTIONS";
    }
    if (resp.status >= 500) {
        set resp.http.Cache-Control = "no-store";
    }
}
