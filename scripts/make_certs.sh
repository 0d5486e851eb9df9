#!/usr/bin/env bash
# Make a private CA and certificates for mutual TLS between IMap clients and imap-server.
#
#   scripts/make_certs.sh DIR [NAME ...]      (default names: server client)
#
# Writes DIR/ca.pem + DIR/ca.key (the CA: keep ca.key offline, it can sign new members) and,
# for each NAME, DIR/NAME.pem + DIR/NAME.key (certificate and private key, signed by the CA;
# usable as a server or a client certificate). Any certificate signed by this CA is
# accepted by every server that trusts it, so use a CA dedicated to one cluster.
# Needs the openssl command. Certificates are valid for DAYS days (default 825).
set -euo pipefail
dir=${1:?usage: make_certs.sh DIR [NAME ...]}
shift
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(server client)
days=${DAYS:-825}
mkdir -p "$dir"
umask 077                                     # private keys readable by their owner only

if [ ! -f "$dir/ca.pem" ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -days "$days" -subj "/CN=imap workers CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

ext="$dir/.leaf.ext"
cat > "$ext" <<'CNF'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
CNF
for name in "${names[@]}"; do
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
        -CAcreateserial -out "$dir/$name.pem" -days "$days" -extfile "$ext" 2>/dev/null
    rm -f "$dir/$name.csr"
done
rm -f "$ext"
chmod 644 "$dir"/*.pem
echo "made in $dir: ca.pem, ca.key, and NAME.pem + NAME.key for: ${names[*]}"
