#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# Build, or reuse, the x86_64 CMA test kernel that `cmaprof vm run` and tests/vm boot:
# Debian's linux-source-6.1 with `make defconfig`, `make kvm_guest.config`, then
# kernel/cma.config merged in (the steps of ../shared/kernels/build.sh), and
# `make mod2yesconfig` because no modules are built or booted.
#
# Cached in ${XDG_CACHE_HOME:-~/.cache}/cmaprof/kernels/<source version>-<fragment hash>/,
# so a new linux-source-6.1 upload or an edited fragment gives a new kernel and an
# unchanged pair is instant. Prints the bzImage path on stdout, progress on stderr:
#
#   export CMAPROF_TEST_KERNEL=$(scripts/build-test-kernel.sh)
#
# The first build takes about 20 minutes on 2 cores and 6 GiB in $TMPDIR. Missing build
# packages are installed with apt-get when run as root.
#
# Usage: scripts/build-test-kernel.sh [--force]    (--force rebuilds a cached kernel)

set -eu

say() { printf 'build-test-kernel: %s\n' "$*" >&2; }
die() { printf 'build-test-kernel: error: %s\n' "$*" >&2; exit 1; }

force=0
case "${1:-}" in
    --force) force=1 ;;
    "") ;;
    *) die "unknown argument '$1' (usage: $0 [--force])" ;;
esac

repo=$(cd "$(dirname "$0")/.." && pwd)
fragment=$repo/kernel/cma.config
[ -f "$fragment" ] || die "$fragment is missing"

hash=$(sha256sum "$fragment" | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cmaprof/kernels

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# The cached kernel for the installed source and this fragment, if any: sets $dir.
cached() {
    installed linux-source-6.1 || return 1
    version=$(dpkg-query -W -f='${Version}' linux-source-6.1)
    dir=$cache/linux-source-6.1_$version-$hash
    set -- "$dir"/bzImage-*-cma
    [ "$force" -eq 0 ] && [ -f "$1" ] || return 1
    say "cached: $1 (linux-source-6.1 $version, fragment $hash)"
    echo "$1"
}

cached && exit 0

# cpio: CONFIG_IKHEADERS packs the headers with it (kernel/gen_kheaders.sh).
packages="linux-source-6.1 build-essential bc flex bison libelf-dev libssl-dev dwarves xz-utils cpio"
missing=""
for p in $packages; do
    installed "$p" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    [ "$(id -u)" -eq 0 ] || die "missing packages:$missing (run as root, or apt-get install them)"
    say "installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq $missing >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq $missing >/dev/null; } ||
        die "apt-get install$missing failed"
    cached && exit 0
fi

tarball=/usr/src/linux-source-6.1.tar.xz
[ -f "$tarball" ] || die "$tarball is missing (reinstall linux-source-6.1)"
mkdir -p "$cache"
work=$(mktemp -d "${TMPDIR:-/tmp}/cmaprof-kbuild.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
log=$work/build.log
failed() {
    cp "$log" "$cache/build-failed.log" 2>/dev/null || true
    grep -E 'error|Error|not found' "$log" | head -n 20 >&2
    die "$1 (full log: $cache/build-failed.log)"
}

say "building linux-source-6.1 $version with $fragment (about 20 minutes on 2 cores)"
tar -C "$work" -xf "$tarball"
cd "$work/linux-source-6.1"
{
    make defconfig
    make kvm_guest.config
    scripts/kconfig/merge_config.sh -m .config "$fragment"
    make olddefconfig
    # Only bzImage is built and virtme-ng boots it without modules: build in what
    # defconfig leaves modular (netfilter NAT, efivarfs, ...), as the shared kernel has it.
    make mod2yesconfig
} >"$log" 2>&1 || failed "configuring the kernel failed"

# merge_config.sh only warns when Kconfig drops an option (an unmet dependency): refuse
# a kernel that lacks what the fragment asks for.
dropped=""
for want in $(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment"); do
    grep -qx "$want" .config || dropped="$dropped $want"
done
[ -z "$dropped" ] || die "Kconfig did not keep:$dropped (a dependency is missing; see $fragment)"

make -j"$(nproc)" bzImage >>"$log" 2>&1 || failed "make bzImage failed"
release=$(make -s kernelrelease)

tmp=$dir.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
cp arch/x86/boot/bzImage "$tmp/bzImage-$release-cma"
cp .config "$tmp/config-$release-cma"
printf 'linux-source-6.1 %s\nfragment %s sha256 %s\n' "$version" "$fragment" \
    "$(sha256sum "$fragment" | cut -d' ' -f1)" >"$tmp/SOURCE"
rm -rf "$dir"
mv "$tmp" "$dir"
say "built $dir/bzImage-$release-cma"
echo "$dir/bzImage-$release-cma"
