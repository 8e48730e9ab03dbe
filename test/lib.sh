# test/lib.sh: shell functions shared by test/run.sh and test/demo.sh.
#
# Both scripts must work on a fresh Debian 12 machine: they install what is
# missing (as root) or print the exact apt line, copy the checkout somewhere
# the postgres OS user can write (PostgreSQL refuses to run as root), and
# build and install the extension from there.

# Which PostgreSQL: PG_CONFIG if set (its bindir and major), else PG_MAJOR
# (default: the release's own, 15 on Debian 12, 17 on Debian 13, as in the
# pg17 suite's root, test/pg17.sh).  Debian's /usr/bin/pg_config picks the
# newest installed major, so it is never used.
debian_codename() { [ -n "${DEBIAN_CODENAME:-}" ] && echo "$DEBIAN_CODENAME" || (. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}"); }
case $(debian_codename) in
trixie) release_pg=17 CLANG_MAJOR=19 ;;
*) release_pg=15 CLANG_MAJOR=14 ;;
esac
if [ -n "${PG_CONFIG:-}" ] && [ -x "$PG_CONFIG" ]; then
	PG_BINDIR=${PG_BINDIR:-$("$PG_CONFIG" --bindir)}
	PG_MAJOR=$("$PG_CONFIG" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
else
	PG_MAJOR=${PG_MAJOR:-$release_pg}
	PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/$PG_MAJOR/bin}
	PG_CONFIG=$PG_BINDIR/pg_config
fi
unset release_pg
export PG_CONFIG PG_BINDIR PG_MAJOR
# test/fuzz/run.sh: the release's clang, with libFuzzer in libclang-rt-N-dev.
export FUZZ_CC=${FUZZ_CC:-clang-$CLANG_MAJOR}
# The package suite (test/package.sh) also needs debhelper and pg_buildext.
PACKAGE_PACKAGES="debhelper dpkg-dev postgresql-server-dev-all"
PACKAGES="build-essential pkg-config postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libcurl4-openssl-dev libssl-dev libmicrohttpd-dev libphonenumber-dev libipc-run-perl python3 python3-psycopg procps clang-$CLANG_MAJOR libclang-rt-$CLANG_MAJOR-dev"

log() { printf '==> %s\n' "$*" >&2; }

# One checked line, counted like a test in the caller's $passed and $failed:
# "ok: WHAT" or "FAILED: WHAT" for the command after WHAT.
count_check() {
	local what=$1
	shift
	if "$@"; then
		passed=$((passed + 1))
		echo "   ok: $what"
	else
		failed=$((failed + 1))
		echo "   FAILED: $what"
	fi
}

# Install the Debian packages that are missing, or say how.
ensure_packages() {
	local missing=() p
	for p in $PACKAGES; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "Missing packages. Run as root:" >&2
		echo "  mkdir -p /etc/postgresql-common/createcluster.d && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/00-plivo-otp.conf" >&2
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

# Copy the checkout into $1 (owned by postgres when root) and build it there;
# $3, if given, is appended to PG_CFLAGS (the sanitize suite's flags).
build_copy() {
	local src=$1 dest=$2 cflags=${PG_CFLAGS:-}${3:+ $3}
	mkdir -p "$dest"
	tar -C "$src" --exclude=.git --exclude=tmp_check --exclude=results --exclude=output_iso --exclude=tmp_instance --exclude=test/fuzz/build -cf - . | tar -C "$dest" -xf -
	[ "$(id -u)" -eq 0 ] && chown -R postgres: "$dest"
	log "building${3:+ with $3}"
	as_pg make -C "$dest" -s PG_CONFIG="$PG_CONFIG" clean >/dev/null &&
		as_pg make -C "$dest" -s -j"$(nproc)" PG_CONFIG="$PG_CONFIG" ${cflags:+PG_CFLAGS="$cflags"} all >/dev/null || return 1
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

# Start the local Plivo stand-in (from the build copy in $1/build, readable
# by postgres even when the checkout is not) in directory $1 (owned by postgres when
# root) with auth id $2 and extra arguments; sets STANDIN_PORT.  The token
# goes to $1/plivo.token (mode 0600), the pid to $1/standin.pid.
start_standin() {
	local dir=$1 auth_id=$2
	shift 2
	as_pg sh -c "umask 077; printf 'token-%s' \"\$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')\" > '$dir/plivo.token'"
	as_pg sh -c "nohup python3 '$dir/build/test/plivo_standin.py' --port 0 --port-file '$dir/standin.port' \
		--auth-id $auth_id --auth-token-file '$dir/plivo.token' $* > '$dir/standin.log' 2>&1 & echo \$! > '$dir/standin.pid'"
	for _ in $(seq 100); do [ -s "$dir/standin.port" ] && break; sleep 0.1; done
	STANDIN_PORT=$(cat "$dir/standin.port")
}

# initdb and start a cluster in $1/data, listening on a socket in $1 and on
# TCP port $2 of no address; the rest of the arguments are postgresql.conf lines.
start_cluster() {
	local dir=$1 port=$2 line
	shift 2
	as_pg "$PG_BINDIR/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
	{
		echo "listen_addresses = ''"
		echo "unix_socket_directories = '$dir'"
		echo "port = $port"
		echo "shared_preload_libraries = 'plivo_otp'"
		echo "plivo_otp.database = 'postgres'"
		for line in "$@"; do echo "$line"; done
	} >> "$dir/data/postgresql.conf"
	as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w start >/dev/null
}

# Stop what start_cluster and start_standin started in $1.
stop_all() {
	local dir=$1
	if [ -f "$dir/data/postmaster.pid" ]; then
		as_pg "$PG_BINDIR/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
	fi
	if [ -f "$dir/standin.pid" ]; then
		kill "$(cat "$dir/standin.pid")" 2>/dev/null || true
	fi
}

# ---- The sanitize suite: servers that load an ASan/UBSan build of the extension

SANITIZE_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"

# Prepare directory $1 for servers that load the sanitized build in $2:
#   $1/env.sh    the environment they run with: LD_PRELOAD of the ASan runtime
#                that $2/plivo_otp.so links (the Debian postgres binary has
#                none) and of asan_early_init.so (test/sanitize/), and
#                ASAN_OPTIONS that write ASan's reports to $1/reports/asan.PID
#                (gcc's UBSan runtime, loaded beside ASan's, ignores log_path:
#                its reports go to stderr, the server log);
#   $1/bin       PostgreSQL's bin directory as symlinks, except postgres (which
#                pg_regress starts) and pg_ctl (which starts the TAP nodes):
#                scripts that load env.sh, note the start in $1/starts.log and
#                exec the real program.  pg_regress gets $1/bin as --bindir,
#                the TAP tests on PATH (both from make's bindir=$1/bin);
#   $1/logs      a copy of the log of each postgres that $1/bin/postgres
#                started (pg_regress deletes its instance after a clean run).
# Only the servers run with the runtime: psql, perl and the stand-in do not.
sanitizer_setup() {
	local dir=$1 build=$2 runtime f
	runtime=$(ldd "$build/plivo_otp.so" | awk '$1 ~ /^libasan\.so/ { print $3 }')
	if [ -z "$runtime" ] || [ ! -e "$runtime" ]; then
		echo "sanitize: $build/plivo_otp.so links no ASan runtime" >&2
		return 1
	fi
	mkdir -p "$dir/bin" "$dir/reports" "$dir/logs"
	gcc -shared -fPIC -O2 -Wall -Werror -o "$dir/asan_early_init.so" \
		"$build/test/sanitize/asan_early_init.c" -ldl || return 1
	cat > "$dir/env.sh" <<EOF
# Generated by test/lib.sh (sanitizer_setup): the sanitize suite's server environment.
export LD_PRELOAD='$runtime:$dir/asan_early_init.so'
export ASAN_OPTIONS='detect_leaks=0:abort_on_error=1:disable_coredump=1:quarantine_size_mb=64:log_path=$dir/reports/asan'
export UBSAN_OPTIONS='print_stacktrace=1:halt_on_error=1:abort_on_error=1'
EOF
	for f in "$PG_BINDIR"/*; do
		ln -sf "$f" "$dir/bin/${f##*/}"
	done
	rm -f "$dir/bin/postgres" "$dir/bin/pg_ctl"
	cat > "$dir/bin/postgres" <<EOF
#!/usr/bin/env bash
# Generated by test/lib.sh (sanitizer_setup): postgres with the ASan runtime preloaded.
. '$dir/env.sh'
echo "postgres \$\$ \$*" >> '$dir/starts.log'
exec > >(exec tee -a "$dir/logs/postgres.\$\$.log") 2>&1
exec '$PG_BINDIR/postgres' "\$@"
EOF
	cat > "$dir/bin/pg_ctl" <<EOF
#!/usr/bin/env bash
# Generated by test/lib.sh (sanitizer_setup): pg_ctl, whose servers get the ASan runtime preloaded.
. '$dir/env.sh'
echo "pg_ctl \$\$ \$*" >> '$dir/starts.log'
exec '$PG_BINDIR/pg_ctl' "\$@"
EOF
	chmod 755 "$dir/bin/postgres" "$dir/bin/pg_ctl"
	: > "$dir/starts.log"
	[ "$(id -u)" -eq 0 ] && chown -R postgres: "$dir"
	return 0
}

# Show that a report would be seen: build test/sanitize/canary.c (from the
# build in $2) as a sanitized shared object that a plain executable
# dlopen()s, as postgres loads plivo_otp.so, and run it in the environment
# of $1/env.sh (reports to $1/canary/$3 instead) with fault $3
# (heap-overflow or shift).  Succeeds when the process died of SIGABRT and
# the report, in an asan.PID file for heap-overflow, on stderr for shift (as
# in a server log), matches the extended regex $4.
sanitizer_canary() {
	local dir=$1 build=$2 fault=$3 pattern=$4 out=$1/canary/$3 rc
	rm -rf "$out"
	mkdir -p "$out"
	gcc $SANITIZE_CFLAGS -g -O1 -shared -fPIC -DCANARY_LIBRARY -o "$out/canary.so" \
		"$build/test/sanitize/canary.c" || return 1
	gcc -O1 -o "$out/canary" "$build/test/sanitize/canary.c" -ldl || return 1
	( (
		. "$dir/env.sh"
		export ASAN_OPTIONS="${ASAN_OPTIONS%%:log_path=*}:log_path=$out/asan"
		exec "$out/canary" "$out/canary.so" "$fault"
	) >/dev/null 2>"$out/stderr"; exit $? ) 2>/dev/null	# (no "Aborted" from bash)
	rc=$?
	[ "$rc" -eq 134 ] || return 1
	case $fault in
	heap-overflow) cat "$out"/asan.* 2>/dev/null | grep -qE "$pattern" ;;
	*) grep -qE "$pattern" "$out/stderr" ;;
	esac
}
