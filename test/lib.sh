# test/lib.sh: shell functions shared by test/run.sh and test/demo.sh.
#
# Both scripts must work on a fresh Debian 12 machine: they install what is
# missing (as root) or print the exact apt line, copy the checkout somewhere
# the postgres OS user can write (PostgreSQL refuses to run as root), and
# build and install the extension from there.

PG_BINDIR=/usr/lib/postgresql/15/bin
export PG_CONFIG=$PG_BINDIR/pg_config
PACKAGES="build-essential pkg-config postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libipc-run-perl python3 clang-14 libclang-rt-14-dev"

log() { printf '==> %s\n' "$*" >&2; }

# Install the Debian packages that are missing, or say how.
ensure_packages() {
	local missing=() p
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "Missing packages. Run as root:" >&2
		echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		return 1
	fi
	log "installing ${missing[*]}"
	# Debian would otherwise create (and under systemd start) a 15/main cluster on 5432.
	mkdir -p /etc/postgresql-common/createcluster.d
	[ -e /etc/postgresql-common/createcluster.d/00-plivo-otp.conf ] ||
		echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/00-plivo-otp.conf
	apt-get update -q >/dev/null &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# Run a command as the postgres OS user when we are root, else as ourselves.
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

# Copy the checkout into $1 (owned by postgres when root) and build it there.
build_copy() {
	local src=$1 dest=$2
	mkdir -p "$dest"
	tar -C "$src" --exclude=.git --exclude=tmp_check --exclude=results --exclude=output_iso -cf - . | tar -C "$dest" -xf -
	[ "$(id -u)" -eq 0 ] && chown -R postgres: "$dest"
	log "building"
	as_pg make -C "$dest" -s PG_CONFIG="$PG_CONFIG" ${PG_CFLAGS:+PG_CFLAGS="$PG_CFLAGS"} clean all >/dev/null || return 1
}

# Install the build in $1 into the PostgreSQL tree (needs root for /usr).
install_build() {
	log "installing the extension"
	make -C "$1" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
}

# A free TCP port on loopback.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
