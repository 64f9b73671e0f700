#!/bin/sh
# Makes the TLS suite's certificates in DIR with Debian's openssl: a test CA and, signed by it,
# ECDSA P-256 certificates for localhost + 127.0.0.1 (server), other.test (the SNI test), an
# expired one, a client certificate; a self-signed localhost certificate; a second CA that
# signed nothing here (for "unknown issuer"). Keys are unencrypted PEM.
#   tests/tls_certs.sh DIR
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
newkey="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"

ca() { # NAME CN
    openssl req -x509 $newkey -keyout "$1.key" -out "$1.pem" -days 3 -subj "/CN=$2" 2>/dev/null
}
signed() { # NAME CN DAYS EXTENSIONS
    openssl req $newkey -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf '%s\n' "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$1.pem" \
        -days "$3" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "gale test CA"
ca otherca "another test CA"
signed server localhost 2 "subjectAltName=DNS:localhost,IP:127.0.0.1"
signed other other.test 2 "subjectAltName=DNS:other.test"
signed expired localhost -1 "subjectAltName=DNS:localhost,IP:127.0.0.1"
signed client "gale test client" 2 "extendedKeyUsage=clientAuth"
openssl req -x509 $newkey -keyout self.key -out self.pem -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
# The server certificate followed by the CA: a chain file, as a server is usually given.
cat server.pem ca.pem >chain.pem
cp server.key chain.key
