#!/bin/sh
# Makes a private certificate authority (CA) and a TLS certificate for the Deephaven server signed by
# it, with the openssl CLI: the compose demo's TLS option (docker/README.md, "TLS"). tests/test_tls.py
# makes its certificates with this script and serves, reads, follows and writes back over them.
#
#   docker/make_tls_certs.sh DIR [NAME ...]
#
# Writes into DIR (created if missing; refuses to replace a certificate already there):
#   ca.pem      the CA's certificate: what clients trust (pydeephaven's tls_root_certs, the trainer's
#               DH_TLS_ROOT_CERTS, your browser for the IDE)
#   server.pem  the server's certificate, for localhost, 127.0.0.1, deephaven (the compose service
#               name the trainer connects to) and every NAME (a DNS name, or an IPv4/IPv6 address)
#   server.key  its private key: unencrypted PKCS#8 PEM, as the engine reads it; mode 600
# The CA's own key is deleted once the certificate is signed, so nothing else can be signed with it:
# to add a name, make a new set in a new DIR (and give clients its ca.pem). The certificates are
# valid for DH_TLS_DAYS days (default 365).
set -eu

if [ "$#" -lt 1 ]; then
    echo "usage: $0 DIR [NAME ...]  (NAME: a host name or IP address clients use to reach the server)" >&2
    exit 2
fi
dir=$1
shift
days=${DH_TLS_DAYS:-365}
if [ -e "$dir/server.pem" ] || [ -e "$dir/server.key" ] || [ -e "$dir/ca.pem" ]; then
    echo "$0: $dir already holds a certificate; choose an empty directory" >&2
    exit 1
fi
mkdir -p "$dir"

names="DNS:localhost,IP:127.0.0.1,DNS:deephaven"
for name in "$@"; do
    case $name in
        *:* | [0-9]*.[0-9]*.[0-9]*.[0-9]*) names="$names,IP:$name" ;;
        *) names="$names,DNS:$name" ;;
    esac
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077  # the keys: readable by their owner only
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$days" \
    -subj "/CN=dh_tf demo CA" -keyout "$work/ca.key" -out "$work/ca.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=deephaven" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf '%s\n' "subjectAltName=$names" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$work/server.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.pem" -CAkey "$work/ca.key" -CAcreateserial \
    -days "$days" -extfile "$work/server.ext" -out "$work/server.pem" 2>/dev/null
openssl verify -CAfile "$work/ca.pem" "$work/server.pem" >/dev/null

mv "$work/server.key" "$dir/server.key"
mv "$work/server.pem" "$dir/server.pem"
mv "$work/ca.pem" "$dir/ca.pem"
chmod 644 "$dir/server.pem" "$dir/ca.pem"
echo "$dir: ca.pem (for clients), server.pem and server.key (for the server); names: $names"
