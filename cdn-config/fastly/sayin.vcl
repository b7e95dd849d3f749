# Fastly VCL snippets for sayin (paste each block as a VCL snippet of the
# named type, or include them in custom VCL). Fastly already takes the edge
# lifetime from Cache-Control s-maxage (sayin-origin sends no
# Surrogate-Control), stale-while-revalidate / stale-if-error from
# Cache-Control, and tags objects with the Surrogate-Key header.

# snippet type: recv
# The origin ignores query strings and cookies: one cached copy per path.
set req.url = querystring.remove(req.url);
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
