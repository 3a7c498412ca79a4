#!/usr/bin/env bash
# Makes a CA and certificates for a TLS cluster with the openssl command line, for trying TLS
# out and for the tests; production certificates come from your own CA.
#
#   bash deploy/make-tls-certs.sh DIR [HOST...]
#   bash deploy/make-tls-certs.sh DIR --k8s NAMESPACE
#
# DIR (created if missing) receives ca.pem (the CA every member and client trusts), ca.key (the
# CA's key: keep it elsewhere once you are done), and for every HOST (default node1 ... node5,
# the hosts of deploy/compose.yaml) HOST.pem and HOST.key: a certificate for DNS:HOST,
# DNS:localhost and IP:127.0.0.1 (so that kvprobe, the containers' health check, and clients on
# published loopback ports can verify it), usable both as a server and as a client certificate,
# as kvnode requires of a member's. Plus client.pem and client.key, a client certificate for
# applications (kvctl and the client library; it names kvctl), and admin.pem and admin.key, the
# operators' client certificate (it names kv-admin, which the compose and Kubernetes TLS setups
# let change the cluster: --tls_admin_names). Valid for KV_TLS_DAYS days (default 30).
#
# --k8s NAMESPACE makes, instead of per-host certificates, one kvnode.pem/kvnode.key shared by
# the pods of deploy/k8s in NAMESPACE (the Secret of deploy/k8s-tls): for
# *.kvnode.NAMESPACE.svc.cluster.local (every pod, as its peers and its probe reach it), the
# client Service kvstore (kvstore, kvstore.NAMESPACE, kvstore.NAMESPACE.svc and
# kvstore.NAMESPACE.svc.cluster.local), localhost and 127.0.0.1.
#
# The keys are unencrypted (kvnode reads unencrypted keys only). ca.key is readable by the user
# who ran this only (mode 0600). For compose: when run as root, DIR and the other files belong
# to uid/gid KV_TLS_OWNER (default 10001:10001, the image's kv user) so that the containers can
# read them through a read-only bind mount, the keys with mode 0400; run as another user, the
# node and client keys are mode 0644, which is fine for a throwaway test directory only. With
# user-namespace remapping, run it as root with KV_TLS_OWNER set to the host uid:gid of the
# containers' kv user. With --k8s, DIR is this user's only (mode 0700): `kubectl create secret`
# reads it, and the pods read the Secret.
set -euo pipefail

if [ $# -lt 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
  [ $# -ge 1 ] && exit 0
  exit 2
fi
command -v openssl >/dev/null || { echo "make-tls-certs: openssl is not installed" >&2; exit 1; }
dir="$1"
shift
days="${KV_TLS_DAYS:-30}"
namespace=""
if [ "${1:-}" = "--k8s" ]; then
  [ $# -eq 2 ] || { echo "make-tls-certs: --k8s takes one namespace" >&2; exit 2; }
  namespace="$2"
  case "$namespace" in
    "" | *[!a-z0-9-]*) echo "make-tls-certs: bad namespace \"$namespace\"" >&2; exit 2 ;;
  esac
  hosts=()
else
  hosts=("$@")
  [ ${#hosts[@]} -gt 0 ] || hosts=(node1 node2 node3 node4 node5)
fi
for h in "${hosts[@]}" ; do
  case "$h" in
    "" | client | admin | ca | kvnode | *[!A-Za-z0-9.-]*)
      echo "make-tls-certs: bad host name \"$h\"" >&2; exit 2 ;;
  esac
done

umask 077
mkdir -p "$dir"
cd "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
  -subj "/CN=kvstore test CA" 2>/dev/null
# leaf NAME SUBJECT_ALT_NAMES EXTENDED_KEY_USAGE
leaf() {
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$work/$1.csr" -subj "/CN=$1" \
    2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" >"$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
    -CAserial "$work/ca.srl" -out "$1.pem" -days "$days" -extfile "$work/$1.ext" 2>/dev/null
}
for h in "${hosts[@]}"; do
  leaf "$h" "DNS:$h,DNS:localhost,IP:127.0.0.1" "serverAuth,clientAuth"
done
if [ -n "$namespace" ]; then
  svc="kvstore.$namespace.svc"
  leaf kvnode "DNS:*.kvnode.$namespace.svc.cluster.local,DNS:kvstore,DNS:kvstore.$namespace,DNS:$svc,DNS:$svc.cluster.local,DNS:localhost,IP:127.0.0.1" \
    "serverAuth,clientAuth"
  hosts=(kvnode)
fi
leaf client "DNS:kvctl" "clientAuth"
leaf admin "DNS:kv-admin" "clientAuth"

# The CA's key is for whoever ran this only (the containers never need it; it is in DIR, so keep
# DIR away from anything but this cluster, or move ca.key out once done).
chmod 0600 ca.key
chmod 0644 ./*.pem
if [ -n "$namespace" ]; then
  chmod 0700 .  # read by `kubectl create secret` as this user; the pods read the Secret
elif [ "$(id -u)" = 0 ]; then
  chown "${KV_TLS_OWNER:-10001:10001}" . ./*.pem
  for key in ./*.key; do [ "$key" = ./ca.key ] || chown "${KV_TLS_OWNER:-10001:10001}" "$key"; done
  chmod 0750 .
  for key in ./*.key; do [ "$key" = ./ca.key ] || chmod 0400 "$key"; done
else
  chmod 0755 .
  for key in ./*.key; do [ "$key" = ./ca.key ] || chmod 0644 "$key"; done
fi
echo "make-tls-certs: CA and certificates for ${hosts[*]}${namespace:+ (namespace $namespace)} client and admin in $(pwd)" >&2
