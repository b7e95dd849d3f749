# Fastly VCL snippets for sayin (paste each block as a VCL snippet of the
# named type, or include them in custom VCL). Fastly already takes the edge
# lifetime from Cache-Control s-maxage (sayin-origin sends no
# Surrogate-Control), stale-while-revalidate / stale-if-error from
# Cache-Control, and tags objects with the Surrogate-Key header.

# snippet type: init
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

# snippet type: recv
# One URL, one object (cdn-config/README.md): the subroutine above, then
# its verdict. Fastly also keys on the Host header: serve sayin from one
# domain per service.
call sayin_normalize_url;
if (req.http.x-sayin-refuse == "admin") {
  error 404 "Not Found";
}
if (req.http.x-sayin-refuse) {
  error 400 "Bad Request";
}
unset req.http.Cookie;
# At most three variants (Vary: Accept-Encoding): br, gzip or identity.
if (req.http.Accept-Encoding ~ "(?i)\bbr\b" && req.http.Accept-Encoding !~ "(?i)\bbr\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
  set req.http.Accept-Encoding = "br";
} elsif (req.http.Accept-Encoding ~ "(?i)\bgzip\b" && req.http.Accept-Encoding !~ "(?i)\bgzip\s*;\s*q\s*=\s*0(\.0*)?\s*(,|$)") {
  set req.http.Accept-Encoding = "gzip";
} else {
  unset req.http.Accept-Encoding;
}

# snippet type: fetch
# An origin 5xx must not replace a cached copy: serve the stale one
# (stale-if-error) when there is one.
if (beresp.status >= 500 && stale.exists) {
  return(deliver_stale);
}

# snippet type: error
# The origin could not be reached: serve the stale copy if there is one.
if (obj.status >= 500 && stale.exists) {
  return(deliver_stale);
}
# The refusals of the recv snippet, as text.
if (obj.status == 400 && req.http.x-sayin-refuse) {
  set obj.http.Content-Type = "text/plain; charset=utf-8";
  set obj.http.Cache-Control = "no-store";
  synthetic "bad request: " + req.http.x-sayin-refuse + " in the URL; sayin's URLs have one spelling" + {"
"};
  return(deliver);
}
if (obj.status == 404 && req.http.x-sayin-refuse == "admin") {
  set obj.http.Content-Type = "text/plain; charset=utf-8";
  set obj.http.Cache-Control = "no-store";
  synthetic "not found" + {"
"};
  return(deliver);
}

# snippet type: deliver
# What the origin sends for the edge is not for fans (Fastly strips
# Surrogate-Key and Surrogate-Control itself; said again here), and a 304
# carries no representation metadata (RFC 9110 15.4.5): the 304 branch
# covers a 304 that is visible here (from the origin, or Fastly's own if it
# decides before vcl_deliver; not verified on a live service, see
# fastly/README.md).
unset resp.http.Surrogate-Key;
unset resp.http.Surrogate-Control;
unset resp.http.Cache-Tag;
unset resp.http.CDN-Cache-Control;
if (resp.status == 304) {
  unset resp.http.Content-Type;
  unset resp.http.Content-Encoding;
  unset resp.http.Content-Language;
  unset resp.http.Content-Length;
  unset resp.http.Content-Range;
}
