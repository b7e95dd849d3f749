"""A test certificate authority made with the openssl CLI (Debian's openssl
package): a root CA, an intermediate, and server certificates for loopback
signed by the intermediate, written as PEM files the way an operator gets
them from a CA (the leaf first, then the chain).

    ca = TestCA(tmp_path)
    cert, key = ca.server("origin")          # SAN: 127.0.0.1, ::1, localhost
    ca.root                                  # the trust anchor for clients
"""

import os
import subprocess


def _openssl(*args, cwd=None):
    r = subprocess.run(["openssl"] + list(args), capture_output=True, text=True, cwd=cwd,
                       timeout=60, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise AssertionError("openssl %s failed:\n%s%s" % (" ".join(args), r.stdout, r.stderr))
    return r.stdout


class TestCA:
    __test__ = False  # a helper, not a test class

    def __init__(self, directory, name="sayin test"):
        self.dir = os.path.join(str(directory), "ca")
        os.makedirs(self.dir, exist_ok=True)
        self._serial = 1
        self.root_key = self._path("root.key")
        self.root = self._path("root.pem")
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                 "-nodes", "-keyout", self.root_key, "-out", self.root, "-days", "30",
                 "-subj", "/CN=%s root CA" % name,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.inter_key = self._path("intermediate.key")
        self.inter = self._path("intermediate.pem")
        csr = self._path("intermediate.csr")
        _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", self.inter_key, "-out", csr, "-subj", "/CN=%s intermediate CA" % name)
        ext = self._path("intermediate.ext")
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:TRUE,pathlen:0\n"
                    "keyUsage=critical,keyCertSign,cRLSign\n")
        self._sign(csr, self.inter, self.root, self.root_key, ext, 30)

    def _path(self, name):
        return os.path.join(self.dir, name)

    def _sign(self, csr, out, ca_cert, ca_key, ext, days):
        self._serial += 1
        _openssl("x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key,
                 "-set_serial", str(self._serial), "-out", out, "-days", str(days),
                 "-extfile", ext)

    def server(self, name, hosts=("127.0.0.1", "::1", "localhost"), key_type="rsa", days=30,
               chain=True):
        """Issues a server certificate; returns (cert_path, key_path). The
        cert file holds the leaf then the intermediate (chain=True).
        key_type: "rsa" (2048 bits) or "ec" (P-256). Issuing the same name
        again writes new files (a renewal) under NAME-N."""
        base = self._path(name)
        n = 1
        while os.path.exists("%s-%d.pem" % (base, n)):
            n += 1
        base = "%s-%d" % (base, n)
        key = base + ".key"
        if key_type == "rsa":
            newkey = ["-newkey", "rsa:2048"]
        else:
            newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        _openssl("req", *newkey, "-nodes", "-keyout", key, "-out", base + ".csr",
                 "-subj", "/CN=%s" % name)
        sans = ",".join(("IP:%s" % h) if (h[0].isdigit() or ":" in h) else ("DNS:%s" % h)
                        for h in hosts)
        ext = base + ".ext"
        with open(ext, "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\n"
                    "keyUsage=critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage=serverAuth\n"
                    "subjectAltName=%s\n" % sans)
        leaf = base + ".leaf.pem"
        self._sign(base + ".csr", leaf, self.inter, self.inter_key, ext, days)
        cert = base + ".pem"
        with open(cert, "w") as out:
            out.write(open(leaf).read())
            if chain:
                out.write(open(self.inter).read())
        os.chmod(key, 0o600)
        return cert, key

    def serial_of(self, cert_pem_path):
        """The leaf's serial number as the openssl CLI prints it (hex)."""
        out = _openssl("x509", "-in", cert_pem_path, "-noout", "-serial")
        return out.strip().split("=", 1)[1]
