#!/usr/bin/env bash
# test/package.sh: the package suite.  Builds the Debian package the way a
# packager does (dpkg-buildpackage -us -uc -b, debian/ with postgresql-common's
# pg_buildext add-on) in a copy of the checkout, checks what it ships, unpacks
# it into a scratch root and runs the regression suite (the Makefile's REGRESS
# list) against what was unpacked; also checks that META.json, the control
# file and debian/changelog name one version.
#
#   bash test/package.sh [WORKDIR]       # as root (dpkg-buildpackage, runuser)
#   bash test/run.sh package             # the same, counted in run.sh's summary
#
# The scratch root is a copy of the system's PostgreSQL 15 (bin, lib, share)
# without any plivo_otp file that `make install` put there, plus the package's
# files from dpkg -x.  PostgreSQL finds its share and lib directories relative
# to its binary, so a server started from the scratch root loads only the
# package's library, control file and scripts; a test run first in that server
# (test/package/installed_package.sql) checks that.  Nothing outside WORKDIR is
# written (no dpkg -i), so the system's installation is left as it was.
#
# Each check prints "ok: ..." or "FAILED: ...", the last line is
# "N passed, N failed" and the exit status is non-zero on any failure.

set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$repo/test/lib.sh"

if [ "$(id -u)" -ne 0 ]; then
	echo "test/package.sh runs as root (dpkg-buildpackage, and the server as postgres)" >&2
	echo "0 passed, 1 failed"
	exit 1
fi
PACKAGES="$PACKAGES $PACKAGE_PACKAGES" ensure_packages || { echo "0 passed, 1 failed"; exit 1; }

if [ -n "${1:-}" ]; then
	work=$1
	mkdir -p "$work"
else
	work=$(mktemp -d /tmp/plivo_otp_package.XXXXXX)
	trap 'rm -rf "$work"' EXIT
fi
chmod 755 "$work"
src=$work/src			# dpkg-buildpackage writes the .deb files beside it
root=$work/root
pgver=15

passed=0
failed=0

# ---- One version everywhere
control_version=$(sed -n "s/^default_version = '\(.*\)'/\1/p" "$repo/plivo_otp.control")
changelog_version=$(dpkg-parsechangelog -l "$repo/debian/changelog" -S Version)
meta() { python3 -c 'import json, sys; m = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$repo/META.json" "$1"; }

count_check "META.json is valid JSON with the PGXN 1.0.0 required keys, license postgresql, for PostgreSQL 15" \
	test "$(meta '",".join(k for k in ["name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"] if k in m) + " " + m["meta-spec"]["version"] + " " + m["license"] + " " + m["prereqs"]["runtime"]["requires"]["PostgreSQL"]' 2>/dev/null)" \
	= "name,abstract,version,maintainer,license,provides,meta-spec 1.0.0 postgresql 15.0.0"
count_check "META.json's version ($(meta 'm["version"]' 2>/dev/null)) is the control file's default_version ($control_version)" \
	test "$(meta 'm["version"]' 2>/dev/null)" = "$control_version"
count_check "META.json provides plivo_otp $control_version in the existing sql/plivo_otp--$control_version.sql" \
	test "$(meta 'm["provides"]["plivo_otp"]["version"] + " " + m["provides"]["plivo_otp"]["file"]' 2>/dev/null)" \
	= "$control_version sql/plivo_otp--$control_version.sql" -a -f "$repo/sql/plivo_otp--$control_version.sql"
count_check "debian/changelog's upstream version (${changelog_version%-*}) is the control file's default_version" \
	test "${changelog_version%-*}" = "$control_version"

# ---- Build
log "package: dpkg-buildpackage -us -uc -b"
rm -rf "$src" "$root" "$work"/*.deb
mkdir -p "$src"
tar -C "$repo" --exclude=.git --exclude=tmp_check --exclude=results --exclude=output_iso \
	--exclude=tmp_instance --exclude=test/fuzz/build --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
	-cf - . | tar -C "$src" -xf -
count_check "debian/control is what pg_buildext generates from debian/control.in and debian/pgversions" \
	sh -c "cd '$src' && pg_buildext checkcontrol >/dev/null"
count_check "dpkg-buildpackage -us -uc -b builds the package" \
	sh -c "cd '$src' && dpkg-buildpackage -us -uc -b > '$work/build.log' 2>&1"
grep -E 'warning:|error:' "$work/build.log" | head -n 20
count_check "the package build prints no warning (compiler, debhelper, dpkg)" \
	sh -c "! grep -qE 'warning:|error:' '$work/build.log'"
deb=$(ls "$work"/postgresql-$pgver-plivo-otp_"$changelog_version"_*.deb 2>/dev/null | head -n 1)
if [ -z "$deb" ]; then
	tail -n 40 "$work/build.log"
	failed=$((failed + 1))
	echo "   FAILED: the package postgresql-$pgver-plivo-otp_${changelog_version}_*.deb exists"
	echo "$passed passed, $failed failed"
	exit 1
fi

# ---- What it ships
dpkg-deb -c "$deb" | awk '{ print $NF }' > "$work/contents"
ships() { grep -qxF "./$1" "$work/contents"; }
count_check "the package ships usr/lib/postgresql/$pgver/lib/plivo_otp.so" ships "usr/lib/postgresql/$pgver/lib/plivo_otp.so"
count_check "the package ships the control file" ships "usr/share/postgresql/$pgver/extension/plivo_otp.control"
for f in "$repo"/sql/plivo_otp--*.sql; do
	count_check "the package ships ${f##*/}" ships "usr/share/postgresql/$pgver/extension/${f##*/}"
done
count_check "the package is postgresql-$pgver-plivo-otp $changelog_version" \
	test "$(dpkg-deb -f "$deb" Package Version | tr '\n' ' ')" = "Package: postgresql-$pgver-plivo-otp Version: $changelog_version "
depends=$(dpkg-deb -f "$deb" Depends)
for p in "postgresql-$pgver" libcurl4 libmicrohttpd12 libssl3; do
	count_check "the package depends on $p" sh -c "echo '$depends' | grep -qE '(^|, )$p( |,|\$)'"
done

count_check "dpkg would install it here: its dependencies are met (dpkg --dry-run -i)" \
	sh -c "dpkg --dry-run -i '$deb' >/dev/null"

# ---- A scratch root: the system's PostgreSQL without plivo_otp, plus the package
log "package: unpacking into a scratch root"
mkdir -p "$root/usr/lib/postgresql" "$root/usr/share/postgresql"
cp -a "/usr/lib/postgresql/$pgver" "$root/usr/lib/postgresql/"
cp -a "/usr/share/postgresql/$pgver" "$root/usr/share/postgresql/"
rm -rf "$root/usr/lib/postgresql/$pgver/lib/plivo_otp.so" "$root/usr/lib/postgresql/$pgver/lib/bitcode/plivo_otp"* \
	"$root/usr/share/postgresql/$pgver/extension/plivo_otp"*
dpkg -x "$deb" "$root"
count_check "the scratch root's PostgreSQL finds its files in the scratch root" \
	test "$("$root/usr/lib/postgresql/$pgver/bin/pg_config" --pkglibdir)" = "$root/usr/lib/postgresql/$pgver/lib"
chown -R postgres: "$src" "$root"

# ---- The regression suite against the unpacked package
log "package: pg_regress against the unpacked package"
cp "$repo/test/package/installed_package.sql" "$src/sql/"
cp "$repo/test/package/installed_package.out" "$src/expected/"
(cd "$src" && as_pg make -s installcheck ISOLATION= TAP_TESTS= PG_CONFIG="$PG_CONFIG" \
	bindir="$root/usr/lib/postgresql/$pgver/bin" EXTRA_REGRESS_OPTS=installed_package) > "$work/regress.out" 2>&1
cat "$work/regress.out" | grep -E '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. (ok|FAILED|failed)' | sed 's/^/   /'
ok=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. ok' "$work/regress.out")
bad=$(grep -cE '^(test +)?[ ]*[[:alnum:]_]+ +\.\.\. (FAILED|failed)' "$work/regress.out")
grep -qE 'tests? (passed|failed)|of [0-9]+ tests' "$work/regress.out" || bad=$((bad + 1))
passed=$((passed + ok))
failed=$((failed + bad))
if [ "$bad" -ne 0 ]; then
	head -c 20000 "$work/regress.out"
	[ -f "$src/regression.diffs" ] && head -c 20000 "$src/regression.diffs"
	[ -f "$src/tmp_instance/log/postmaster.log" ] && tail -n 40 "$src/tmp_instance/log/postmaster.log"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
