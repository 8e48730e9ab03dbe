#!/usr/bin/env bash
# test/pg17.sh: the pg17 suite of test/run.sh.  Runs test/run.sh again, with
# Debian 13's own postgresql-17, inside a Debian 13 (trixie) root entered with
# unshare and chroot on this Debian 12 machine.
#
#   bash test/pg17.sh WORKDIR [SUITE...]     # as root; default suites:
#                                            # regress isolation tap unit
#   bash test/pg17.sh --prepare WORKDIR      # only make the root (test/run.sh
#                                            # starts this in the background,
#                                            # at low priority, while the PG15
#                                            # suites run)
#
# The root is made once with debootstrap, with every package test/lib.sh
# lists for PostgreSQL 17, and kept under $PG17_ROOT_CACHE (default
# /var/cache/plivo_otp), in a directory named after a hash of what it
# contains; later runs reuse it.  Each run lays an overlay on it (writes go to
# WORKDIR, the cached root stays as it was), bind-mounts the checkout
# read-only at /plivo_otp, and runs test/run.sh in new mount, PID and IPC
# namespaces: /proc, /dev, /dev/shm, /sys and /tmp exist inside only, and
# every process the inner run leaves behind ends with it.  The inner run's
# last line, "N passed, N failed", is this script's last line.
#
# Environment passed in: PG_CFLAGS, TAP_FILES, TAP_JOBS, FUZZ_SECONDS,
# PG_TEST_TIMEOUT_DEFAULT, PLIVO_OTP_TEST_SLOWDOWN, KEEP_TEST_DIR (the inner
# run's /tmp is WORKDIR/tmp).

set -u
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prepare_only=false
if [ "${1:-}" = --prepare ]; then
	prepare_only=true
	shift
fi
work=${1:?usage: test/pg17.sh WORKDIR [SUITE...]}
shift
suites=${*:-regress isolation tap unit}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache_dir=${PG17_ROOT_CACHE:-/var/cache/plivo_otp}

log() { printf '==> %s\n' "$*" >&2; }
fail() {
	echo "   FAILED: $*"
	echo "0 passed, 1 failed"
	exit 1
}

[ "$(id -u)" -eq 0 ] || fail "the pg17 suite runs as root (debootstrap, unshare, chroot)"

# What the root holds: the packages test/lib.sh installs for PostgreSQL 17 on
# trixie (lib.sh computes them from PG_MAJOR and the release's clang).
root_packages=$(DEBIAN_CODENAME=trixie PG_MAJOR=17 PG_CONFIG= PG_BINDIR= FUZZ_CC= \
	bash -c '. "$1/test/lib.sh" && echo "$PACKAGES"' _ "$repo")
[ -n "$root_packages" ] || fail "cannot read the package list from test/lib.sh"
# Bump ROOT_FORMAT when the way the root is made changes.
ROOT_FORMAT=2
key=$(printf '%s\n' "$ROOT_FORMAT" trixie "$mirror" $root_packages | sha256sum | cut -c1-16)
root=$cache_dir/trixie-$key

# Run "$@" chrooted into root $1, in new mount, PID and IPC namespaces, with
# /proc, /dev, /dev/shm and /sys mounted: nothing mounted here is seen
# outside, and whatever "$@" leaves running is killed when it ends.  With $2
# (a work directory), the root is an overlay on $1 whose writes land in $2,
# $2/tmp is its /tmp and the checkout is mounted read-only at /plivo_otp.
in_root() {
	local lower=$1 work=$2
	shift 2
	unshare --mount --pid --ipc --fork --kill-child /bin/bash -c '
		set -e
		r=$1 work=$2 repo=$3
		shift 3
		mount --make-rprivate /
		if [ -n "$work" ]; then
			mount -t overlay overlay -o "lowerdir=$r,upperdir=$work/upper,workdir=$work/ovl" "$work/merged"
			r=$work/merged
			mount --bind "$work/tmp" "$r/tmp"
			mkdir -p "$r/plivo_otp"
			mount --bind "$repo" "$r/plivo_otp"
			mount -o remount,bind,ro "$r/plivo_otp"
		fi
		mount -t proc proc "$r/proc"
		mount --rbind /dev "$r/dev"
		mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
		mount --rbind /sys "$r/sys"
		exec chroot "$r" /usr/bin/env -i "$@"' _ "$lower" "$work" "$repo" "$@"
}

make_root() {
	local tmp=$cache_dir/.trixie-$key.$$ t0=$SECONDS
	log "pg17: making the Debian 13 root $root (first run; debootstrap and apt-get)"
	command -v debootstrap >/dev/null ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null ||
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null; } ||
		return 1
	mkdir -p "$cache_dir"
	# (Under the lock: half-made roots left by runs that were killed can go.)
	rm -rf "$cache_dir"/.trixie-*
	debootstrap --variant=minbase trixie "$tmp" "$mirror" > "$work/debootstrap.log" 2>&1 ||
		{ tail -n 30 "$work/debootstrap.log"; return 1; }
	# No cluster created, no service started inside; no recommends.
	mkdir -p "$tmp/etc/postgresql-common/createcluster.d"
	echo 'create_main_cluster = false' > "$tmp/etc/postgresql-common/createcluster.d/00-plivo-otp.conf"
	printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
	chmod 755 "$tmp/usr/sbin/policy-rc.d"
	echo 'APT::Install-Recommends "false";' > "$tmp/etc/apt/apt.conf.d/90plivo-otp"
	# A throwaway root: dpkg need not fsync every file it unpacks.
	echo force-unsafe-io > "$tmp/etc/dpkg/dpkg.cfg.d/90plivo-otp"
	cp /etc/resolv.conf "$tmp/etc/resolv.conf" 2>/dev/null
	# shellcheck disable=SC2086
	in_root "$tmp" "" PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
		/bin/sh -c "apt-get update -q && apt-get install -y -q $root_packages && apt-get clean" \
		> "$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; rm -rf "$tmp"; return 1; }
	rm -rf "$tmp/var/lib/apt/lists"/*_dists_* 2>/dev/null
	mv "$tmp" "$root" || return 1
	# Roots of other keys are from an older lib.sh: drop them.
	for tmp in "$cache_dir"/trixie-*; do
		[ "$tmp" = "$root" ] || rm -rf "$tmp"
	done
	log "pg17: root made in $((SECONDS - t0)) s"
	echo "   (pg17 root made in $((SECONDS - t0)) s)"
}

mkdir -p "$work" "$cache_dir"
# One maker of the root at a time (a --prepare in the background, the run).
exec 8>"$cache_dir/.lock"
flock 8
if [ ! -x "$root/usr/lib/postgresql/17/bin/postgres" ]; then
	make_root || fail "making the Debian 13 root"
else
	log "pg17: reusing $root"
fi
flock -u 8
$prepare_only && exit 0

# The run's own view of the root: an overlay whose writes land in $work.
mkdir -p "$work/upper" "$work/ovl" "$work/merged" "$work/tmp"
chmod 1777 "$work/tmp"
inner_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/root
	PG_MAJOR=17 PG_TEST_TIMEOUT_DEFAULT="${PG_TEST_TIMEOUT_DEFAULT:-60}")
for v in PG_CFLAGS TAP_FILES TAP_JOBS FUZZ_SECONDS PLIVO_OTP_TEST_SLOWDOWN KEEP_TEST_DIR CI; do
	[ -n "${!v:-}" ] && inner_env+=("$v=${!v}")
done
log "pg17: test/run.sh $suites, inside the root"
# shellcheck disable=SC2086
in_root "$root" "$work" "${inner_env[@]}" /bin/bash /plivo_otp/test/run.sh $suites
