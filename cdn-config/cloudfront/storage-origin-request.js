// sayin's bucket keys at CloudFront (cdn-config/README.md, "Storage as the
// backend"): a Lambda@Edge function (Node.js) on the origin-request event
// of a behaviour whose origin is the S3 bucket the publisher's s3 driver
// fills. It runs only on a cache miss, after the cache key was made from
// the viewer's path (already normalized by normalize-url.js) and the
// Accept-Encoding CloudFront normalized (the cache policy's
// EnableAcceptEncodingBrotli/Gzip): so the key stays the fan's URL, and the
// cloudfront purge driver's path invalidations reach every variant.
// What it does to the request sent to the bucket:
// - a name's variant key from the normalized Accept-Encoding: "/_br" +
//   path when it names br, else "/_gzip" + path when it names gzip, else
//   the path (identity); objects (/a/...) have one key;
// - "index.html" after a final "/" (/u/H/ is the stored u/H/index.html, /
//   is index.html), so no request is ever a bucket listing;
// - no query string (a listing's ?list-type=2, ?prefix=... never reach it).
// tests/integration/test_s3_storage.py runs it with node.
'use strict';

function coding(headers) {
    const ae = headers['accept-encoding'];
    const value = ae && ae.length > 0 ? ae[0].value.toLowerCase() : '';
    const tokens = value.split(',').map((t) => t.split(';')[0].trim());
    if (tokens.includes('br')) {
        return 'br';
    }
    if (tokens.includes('gzip')) {
        return 'gzip';
    }
    return '';
}

exports.handler = async (event) => {
    const request = event.Records[0].cf.request;
    let uri = request.uri;
    if (!uri.startsWith('/a/')) {
        const c = coding(request.headers);
        if (c !== '') {
            uri = '/_' + c + uri;
        }
    }
    if (uri.endsWith('/')) {
        uri += 'index.html';
    }
    request.uri = uri;
    request.querystring = '';
    return request;
};
