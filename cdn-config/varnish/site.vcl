# The site-specific part of sayin's Varnish edge, included by sayin.vcl:
# where the origin is, who may purge, and local overrides. Edit this file
# (or write your own next to sayin.vcl); sayin.vcl itself is the policy and
# stays as shipped. The integration tests write their own copy.

# The origin (sayin-origin's `listen`). Varnish resolves .host when the VCL
# is compiled; a name must resolve to exactly one address.
backend origin {
    .host = "127.0.0.1";
    .port = "8080";
    .connect_timeout = 2s;
    .first_byte_timeout = 30s;
    .between_bytes_timeout = 10s;
    # sayin-origin answers /healthz with 200 "ok". A sick origin makes the
    # edge serve stale names for up to their stale-if-error time without
    # trying it; it starts healthy (.initial = .threshold) and is declared
    # sick after two failed probes in a window of three (about 2 s).
    .probe = {
        .url = "/healthz";
        .interval = 1s;
        .timeout = 1s;
        .window = 3;
        .threshold = 2;
        .initial = 2;
    }
}

# Addresses allowed to PURGE (URLs and surrogate keys). The publisher's
# purge driver connects from here.
acl purgers {
    "127.0.0.1";
    "::1";
}

# Runs at the end of sayin.vcl's vcl_backend_response, after the policy set
# beresp.ttl, grace and keep: cap lifetimes here for a staging edge.
sub sayin_site_backend_response {
}
