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
# - every spelling of a URL is either the one path the origin reads or
#   refused (sayin_normalize_url), and the origin's admin paths (/metrics,
#   /healthz) are not served to fans, however spelled;
# - what the origin sends for the edge (surrogate keys, CDN-Cache-Control)
#   and this VCL's own x-sayin-* headers never reach a fan, and a 304 carries
#   no representation metadata (RFC 9110 15.4.5);
# - X-Cache says HIT, STALE, MISS or PASS.
vcl 4.1;

import std;
import purge;
import xkey;

include "./site.vcl";

# BEGIN sayin_normalize_url (the same text is in cdn-config/fastly/sayin.vcl;
# tests/integration/test_edge_hardening.py checks that they match)
#
# The URL contract (cdn-config/README.md, "One URL, one object"): the origin
# names what it serves by the request-target's path up to the first "?" or
# "#", byte for byte: no percent-decoding, no dot segments, case-sensitive.
# Every URL the publisher writes is made of a-z, 0-9, "_", ".", "-" and "/".
# So every spelling is either turned into that one path (the cache key and
# the URL sent to the origin: the two never differ) or refused. Sets
# req.http.x-sayin-refuse to "admin" (answer 404) or to the reason for a
# 400; leaves it unset when req.url is the path to look up.
sub sayin_normalize_url {
    unset req.http.x-sayin-refuse;
    if (req.url ~ "#") {
        # A fragment is never part of a request-target (RFC 9112 3.2).
        set req.http.x-sayin-refuse = "a fragment (#)";
    } else {
        # The origin ignores query strings: dropped from the key and from
        # the request to the origin, so a random query reaches nothing.
        set req.url = regsub(req.url, "\?.*$", "");
        # An empty segment names nothing: "//u//x" is "/u/x".
        set req.url = regsuball(req.url, "/{2,}", "/");
        if (req.url ~ "%") {
            # "%6d", "%6D" and "m" would be three origin paths (or one
            # decoded path the origin never sees): no URL of ours needs one.
            set req.http.x-sayin-refuse = "percent-encoding";
        } elsif (req.url !~ "^/[A-Za-z0-9._~!$&'()*+,;=:@/-]*$") {
            set req.http.x-sayin-refuse = "a byte outside RFC 3986's path characters";
        } elsif (req.url ~ "/\.\.?(/|$)") {
            # Clients resolve "." and ".." (RFC 3986 5.2.4); the origin
            # would not.
            set req.http.x-sayin-refuse = "a dot segment";
        } elsif (req.url ~ "(?i)^/(metrics|healthz)") {
            # The origin's own pages, for its operators and the edge's
            # health probe (which asks the origin directly), not for fans.
            set req.http.x-sayin-refuse = "admin";
        }
    }
}
# END sayin_normalize_url

sub vcl_recv {
    # Headers this VCL uses between its subroutines; a client's are dropped.
    if (req.restarts == 0) {
        unset req.http.x-sayin-cache;
        unset req.http.x-sayin-stale;
        unset req.http.x-sayin-revalidate;
        unset req.http.x-sayin-purged;
    }
    set req.backend_hint = origin;

    call sayin_normalize_url;
    if (req.http.x-sayin-refuse == "admin") {
        return (synth(404, "Not Found"));
    }
    if (req.http.x-sayin-refuse) {
        return (synth(400, "Bad Request"));
    }

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
    unset bereq.http.x-sayin-cc;
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
    # beresp.ttl: s-maxage, then max-age). Read from a scratch header on
    # bereq, which is never stored with the object nor sent to a fan.
    if (beresp.http.CDN-Cache-Control) {
        set bereq.http.x-sayin-cc = beresp.http.CDN-Cache-Control;
        if (bereq.http.x-sayin-cc ~ "(?i)(^|[,\s])(no-store|no-cache|private)\b") {
            call sayin_hit_for_miss;
        }
        if (bereq.http.x-sayin-cc ~ "(?i)(^|[,\s])max-age\s*=\s*[0-9]+") {
            set beresp.ttl = std.duration(regsub(bereq.http.x-sayin-cc,
                "(?i)^(.*[,\s])?max-age\s*=\s*([0-9]+).*$", "\2") + "s", 0s);
        }
    } else {
        set bereq.http.x-sayin-cc = beresp.http.Cache-Control;
        if (bereq.http.x-sayin-cc ~ "(?i)(^|[,\s])(no-store|no-cache|private)\b") {
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
    if (bereq.http.x-sayin-cc ~ "(?i)stale-while-revalidate\s*=\s*[0-9]+") {
        set beresp.http.x-sayin-swr = regsub(bereq.http.x-sayin-cc,
            "(?i)^.*stale-while-revalidate\s*=\s*([0-9]+).*$", "\1") + "s";
        set beresp.grace = std.duration(beresp.http.x-sayin-swr, 0s);
    }
    if (bereq.http.x-sayin-cc ~ "(?i)stale-if-error\s*=\s*[0-9]+") {
        set beresp.grace = std.duration(regsub(bereq.http.x-sayin-cc,
            "(?i)^.*stale-if-error\s*=\s*([0-9]+).*$", "\1") + "s", 0s);
    }
    unset bereq.http.x-sayin-cc;

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

# What the origin sends for the edge, and this VCL's own bookkeeping, is
# not for fans: the purge keys (Surrogate-Key and its copies), the CDN's
# lifetime (CDN-Cache-Control, consumed here) and every x-sayin-* header
# this VCL uses (none is stored on an object except x-sayin-swr).
sub sayin_strip_internal {
    unset resp.http.xkey;
    unset resp.http.Surrogate-Key;
    unset resp.http.Surrogate-Control;
    unset resp.http.Cache-Tag;
    unset resp.http.CDN-Cache-Control;
    unset resp.http.x-sayin-swr;
    unset resp.http.x-sayin-cc;
    unset resp.http.x-sayin-refuse;
}

# Conditional requests. Varnish turns a 200 into a 304 itself, after
# vcl_deliver, keeping every header of the 200 (Content-Type...). So the
# decision is made here instead (RFC 9110 13.2.2: If-None-Match with the
# weak comparison against each listed tag, or "*"; without it,
# If-Modified-Since against Last-Modified), the conditions Varnish would
# read are dropped so that it does not decide again, and a 304 keeps only
# what the origin's own 304 carries: no representation metadata
# (RFC 9110 15.4.5).
sub sayin_not_modified {
    if (resp.status == 200 && req.http.If-None-Match) {
        set req.http.x-sayin-inm = req.http.If-None-Match + "|" + resp.http.ETag;
        if (req.http.If-None-Match ~ "^\s*\*\s*$" ||
            (resp.http.ETag &&
             req.http.x-sayin-inm ~ {"^(.*,)?\s*(W/)?("[^"]*")\s*(,.*)?\|\s*(W/)?\3\s*$"})) {
            set resp.status = 304;
        }
        unset req.http.x-sayin-inm;
    } elsif (resp.status == 200 && req.http.If-Modified-Since && resp.http.Last-Modified) {
        # An unreadable date, or one in the future, never matches.
        if (std.time(req.http.If-Modified-Since, now + 1d) <= now &&
            std.time(resp.http.Last-Modified, now + 2d) <=
            std.time(req.http.If-Modified-Since, now + 1d)) {
            set resp.status = 304;
        }
    }
    unset req.http.If-None-Match;
    unset req.http.If-Modified-Since;
    if (resp.status == 304) {
        unset resp.http.Content-Type;
        unset resp.http.Content-Encoding;
        unset resp.http.Content-Language;
        unset resp.http.Content-Length;
        unset resp.http.Content-Range;
        unset resp.http.Content-Security-Policy;
        unset resp.http.X-Content-Type-Options;
        unset resp.http.Accept-Ranges;
    }
}

sub vcl_deliver {
    if (req.http.x-sayin-cache) {
        set resp.http.X-Cache = req.http.x-sayin-cache;
    } else {
        set resp.http.X-Cache = "MISS";
    }
    call sayin_strip_internal;
    call sayin_not_modified;
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
    call sayin_strip_internal;
    if (resp.status == 400 && req.http.x-sayin-refuse) {
        # The URL is not in its one spelling (sayin_normalize_url).
        set resp.http.Content-Type = "text/plain; charset=utf-8";
        set resp.http.Cache-Control = "no-store";
        set resp.body = "bad request: " + req.http.x-sayin-refuse +
            " in the URL; sayin's URLs have one spelling" + {"
"};
        return (deliver);
    }
    if (resp.status == 404 && req.http.x-sayin-refuse == "admin") {
        set resp.http.Content-Type = "text/plain; charset=utf-8";
        set resp.http.Cache-Control = "no-store";
        set resp.body = "not found" + {"
"};
        return (deliver);
    }
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
