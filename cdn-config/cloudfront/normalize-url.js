// sayin's URL contract at CloudFront (cdn-config/README.md, "One URL, one
// object"): a CloudFront Function (runtime cloudfront-js-2.0) on the
// viewer-request event of the distribution's default behaviour. The same
// rules as sayin_normalize_url in varnish/sayin.vcl: the origin names what
// it serves by the path up to the first "?" or "#", byte for byte, so every
// spelling either becomes that one path (the cache key and the URL sent to
// the origin) or is refused. tests/integration/test_edge_hardening.py runs
// it with node.
function reply(status, description, text) {
    return {
        statusCode: status,
        statusDescription: description,
        headers: {
            'content-type': { value: 'text/plain; charset=utf-8' },
            'cache-control': { value: 'no-store' }
        },
        body: { encoding: 'text', data: text + '\n' }
    };
}

function handler(event) {
    var request = event.request;
    var uri = request.uri;
    var refuse = null;

    if (uri.indexOf('#') >= 0) {
        // A fragment is never part of a request-target (RFC 9112 3.2).
        refuse = 'a fragment (#)';
    } else {
        // An empty segment names nothing: "//u//x" is "/u/x".
        uri = uri.replace(/\/{2,}/g, '/');
        if (uri.indexOf('%') >= 0) {
            refuse = 'percent-encoding';
        } else if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@\/-]*$/.test(uri)) {
            refuse = "a byte outside RFC 3986's path characters";
        } else if (/\/\.\.?(\/|$)/.test(uri)) {
            refuse = 'a dot segment';
        } else if (/^\/(metrics|healthz)/i.test(uri)) {
            // The origin's own pages, not for fans.
            return reply(404, 'Not Found', 'not found');
        }
    }
    if (refuse !== null) {
        return reply(400, 'Bad Request',
                     'bad request: ' + refuse + " in the URL; sayin's URLs have one spelling");
    }
    request.uri = uri;
    // The origin ignores query strings (and the cache policy keeps them out
    // of the key): not forwarded either.
    request.querystring = {};
    return request;
}
