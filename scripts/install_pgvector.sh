#!/usr/bin/env bash
# Installs the pgvector extension into the local PostgreSQL server (for tests/test_migrate_postgres.py's
# vector(n) case and the migration benchmark). Debian bookworm packages PostgreSQL 15 but not pgvector,
# so this builds pgvector's release source, as Debian's own pool ships it, against the installed server:
#
#   sudo scripts/install_pgvector.sh          # needs root: apt-get and the server's extension folder
#
# Does nothing when the extension is already installed. The tarball is checked against its sha256.
set -euo pipefail
VERSION=0.8.0
SHA256=867a2c328d4928a5a9d6f052cd3bc78c7d60228a9b914ad32aa3db88e9de27b0
URL=http://deb.debian.org/debian/pool/main/p/pgvector/pgvector_${VERSION}.orig.tar.gz

pg_config=$(ls /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$pg_config" ]; then
  major=$(ls -d /usr/lib/postgresql/*/ 2>/dev/null | sort -V | tail -1 | xargs -r basename || true)
  [ -n "$major" ] || { echo "no PostgreSQL server installed (apt-get install postgresql)" >&2; exit 1; }
else
  major=$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
fi
sharedir=/usr/share/postgresql/$major/extension
if [ -f "$sharedir/vector.control" ]; then
  echo "pgvector already installed for PostgreSQL $major"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q "postgresql-server-dev-$major" make gcc curl ca-certificates >/dev/null
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
curl -fsSL -o "$work/pgvector.tar.gz" "$URL"
echo "$SHA256  $work/pgvector.tar.gz" | sha256sum -c --quiet
tar -xzf "$work/pgvector.tar.gz" -C "$work"
pg_config=/usr/lib/postgresql/$major/bin/pg_config
make -C "$work/pgvector-$VERSION" PG_CONFIG="$pg_config" with_llvm=no OPTFLAGS="" -j"$(nproc)" >/dev/null
make -C "$work/pgvector-$VERSION" PG_CONFIG="$pg_config" with_llvm=no install >/dev/null
echo "pgvector $VERSION installed for PostgreSQL $major"
