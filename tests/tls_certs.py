"""Certificates for the TLS tests, made with the openssl command-line tool
into a temporary folder at test time (never committed): CAs, server and
client leaves signed by them, expired ones, and the Kubernetes-style folder
whose files a symlink swap replaces.

    pki = Pki(tmpdir)
    ca = pki.ca("ca1")
    srv = pki.leaf("server", ca)            # SAN IP:127.0.0.1, DNS:localhost
    old = pki.leaf("old", ca, expired=True)
    srv.cert, srv.key, ca.cert              # paths
"""
import os
import subprocess

CA_CONFIG = """[ca]
default_ca = c
[c]
database = {db}/index.txt
new_certs_dir = {db}
serial = {db}/serial
default_md = sha256
policy = p
copy_extensions = none
unique_subject = no
[p]
commonName = supplied
[ext]
subjectAltName = {san}
extendedKeyUsage = serverAuth, clientAuth
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
"""

# P-256 keys: quick to make and to handshake with.
KEY_ARGS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes"]


def openssl(*args):
    p = subprocess.run(["openssl"] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed: %s" % (args[0], p.stderr))
    return p.stdout


class Cert:
    def __init__(self, folder, name):
        self.name = name
        self.cert = os.path.join(folder, name + ".crt")
        self.key = os.path.join(folder, name + ".key")

    def pem(self):
        with open(self.cert) as f:
            return f.read()

    def serial(self):
        out = openssl("x509", "-in", self.cert, "-noout", "-serial")
        return out.strip().split("=", 1)[1].upper()


class Pki:
    """Makes certificates in folder."""

    def __init__(self, folder):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.serial = 0x1000

    def ca(self, name):
        c = Cert(self.dir, name)
        openssl("req", "-x509", *KEY_ARGS, "-keyout", c.key, "-out", c.cert,
                "-subj", "/CN=fsps test CA " + name, "-days", "30",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return c

    def leaf(self, name, ca, san="IP:127.0.0.1,DNS:localhost",
             expired=False):
        """A leaf for servers and clients (both usages), signed by ca;
        expired: valid in January 2020 only."""
        c = Cert(self.dir, name)
        csr = os.path.join(self.dir, name + ".csr")
        openssl("req", *KEY_ARGS, "-keyout", c.key, "-out", csr,
                "-subj", "/CN=" + name)
        db = os.path.join(self.dir, "db-" + name)
        os.makedirs(db)
        open(os.path.join(db, "index.txt"), "w").close()
        self.serial += 1
        with open(os.path.join(db, "serial"), "w") as f:
            f.write("%X\n" % self.serial)
        cnf = os.path.join(db, "ca.cnf")
        with open(cnf, "w") as f:
            f.write(CA_CONFIG.format(db=db, san=san))
        dates = (["-startdate", "20200101000000Z", "-enddate",
                  "20200201000000Z"] if expired else ["-days", "30"])
        openssl("ca", "-batch", "-config", cnf, "-cert", ca.cert, "-keyfile",
                ca.key, "-in", csr, "-out", c.cert, "-extensions", "ext",
                "-notext", *dates)
        return c

    def bundle(self, name, *certs):
        """A file holding the certificates of several (CA) certs."""
        path = os.path.join(self.dir, name + ".pem")
        with open(path, "w") as f:
            for c in certs:
                f.write(c.pem())
        return path


class SecretDir:
    """A folder laid out as the kubelet mounts a Secret: tls.crt, tls.key
    and ca.crt are symlinks through ..data to a timestamped folder, and an
    update swaps ..data atomically (rename of a new symlink over it)."""

    def __init__(self, folder):
        self.dir = folder
        os.makedirs(folder, exist_ok=True)
        self.gen = 0
        for name in ("tls.crt", "tls.key", "ca.crt"):
            os.symlink(os.path.join("..data", name),
                       os.path.join(folder, name))

    def path(self, name):
        return os.path.join(self.dir, name)

    def put(self, cert, key, ca):
        """Publishes the contents of the files cert, key and ca."""
        self.gen += 1
        ts = os.path.join(self.dir, "..gen_%d" % self.gen)
        os.makedirs(ts)
        for name, src in (("tls.crt", cert), ("tls.key", key),
                          ("ca.crt", ca)):
            with open(src, "rb") as f, open(os.path.join(ts, name),
                                            "wb") as g:
                g.write(f.read())
        tmp = os.path.join(self.dir, "..data_tmp")
        os.symlink(os.path.basename(ts), tmp)
        os.rename(tmp, os.path.join(self.dir, "..data"))
