#!/bin/sh
# SPDX-License-Identifier: GPL-2.0-only
#
# Build, or reuse, an x86_64 CMA test kernel that `cmaprof vm run` and tests/vm boot:
# Debian's linux-source-SERIES (6.1 by default; 6.1 and 6.12 are in Debian 12's suites,
# 7.x in trixie-backports: add that suite to apt's sources first) with `make defconfig`,
# `make kvm_guest.config`, then kernel/cma.config merged in (the steps of
# ../shared/kernels/build.sh), and `make mod2yesconfig` because no modules are built.
#
# The fragment is one list for every series. Kconfig drops what a series does not have
# (CONFIG_DMA_PERNUMA_CMA is gone after 6.1): each dropped option is reported, written
# to the kernel's SOURCE file, and only the options cmaprof cannot work without
# (REQUIRED below) stop the build.
#
# Cached in ${XDG_CACHE_HOME:-~/.cache}/cmaprof/kernels/<package>_<version>-<fragment
# hash>/, so a new upload or an edited fragment gives a new kernel and an unchanged pair
# is instant. Prints the bzImage path on stdout, progress on stderr:
#
#   export CMAPROF_TEST_KERNEL=$(scripts/build-test-kernel.sh 6.12)
#
# The first build takes about 20 minutes on 2 cores and 6 GiB in $TMPDIR. Missing build
# packages are installed with apt-get when run as root.
#
# Usage: scripts/build-test-kernel.sh [--force] [--config-only] [SERIES]
#   --force        rebuild a cached kernel
#   --config-only  stop after the configuration (and its dropped-option report)

set -eu

say() { printf 'build-test-kernel: %s\n' "$*" >&2; }
die() { printf 'build-test-kernel: error: %s\n' "$*" >&2; exit 1; }

force=0
config_only=0
series=6.1
for arg in "$@"; do
    case "$arg" in
        --force) force=1 ;;
        --config-only) config_only=1 ;;
        [0-9]*.[0-9]*) series=$arg ;;
        *) die "unknown argument '$arg' (usage: $0 [--force] [--config-only] [SERIES, e.g. 6.12])" ;;
    esac
done
pkg=linux-source-$series
# What cmaprof cannot work without: CMA with its debugfs/sysfs counters, the exact headers
# for BCC, kprobes, the tracepoints, page_owner for the cross-checks.
REQUIRED="CONFIG_CMA=y CONFIG_CMA_DEBUGFS=y CONFIG_CMA_SYSFS=y CONFIG_IKHEADERS=y
CONFIG_KPROBES=y CONFIG_FTRACE=y CONFIG_MEMORY_ISOLATION=y CONFIG_PAGE_OWNER=y"

repo=$(cd "$(dirname "$0")/.." && pwd)
fragment=$repo/kernel/cma.config
[ -f "$fragment" ] || die "$fragment is missing"

hash=$(sha256sum "$fragment" | cut -c1-12)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/cmaprof/kernels

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# The cached kernel for the installed source and this fragment, if any: sets $dir.
cached() {
    installed "$pkg" || return 1
    version=$(dpkg-query -W -f='${Version}' "$pkg")
    dir=$cache/${pkg}_$version-$hash
    set -- "$dir"/bzImage-*-cma
    [ "$force" -eq 0 ] && [ "$config_only" -eq 0 ] && [ -f "$1" ] || return 1
    say "cached: $1 ($pkg $version, fragment $hash)"
    echo "$1"
}

cached && exit 0

# cpio: CONFIG_IKHEADERS packs the headers with it (kernel/gen_kheaders.sh).
packages="$pkg build-essential bc flex bison libelf-dev libssl-dev dwarves xz-utils cpio"
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
        die "apt-get install$missing failed (7.x sources: add the trixie-backports suite to apt's sources)"
    cached && exit 0
fi

version=$(dpkg-query -W -f='${Version}' "$pkg")
dir=$cache/${pkg}_$version-$hash
tarball=/usr/src/$pkg.tar.xz
[ -f "$tarball" ] || die "$tarball is missing (reinstall $pkg)"
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

say "building $pkg $version with $fragment (about 20 minutes on 2 cores)"
tar -C "$work" -xf "$tarball"
cd "$work/$pkg"
{
    make defconfig
    make kvm_guest.config
    scripts/kconfig/merge_config.sh -m .config "$fragment"
    make olddefconfig
    # Only bzImage is built and virtme-ng boots it without modules: build in what
    # defconfig leaves modular (netfilter NAT, efivarfs, ...), as the shared kernel has it.
    make mod2yesconfig
} >"$log" 2>&1 || failed "configuring the kernel failed"

# merge_config.sh only warns when Kconfig drops an option (renamed, removed, or an unmet
# dependency in this series): report each; refuse only a kernel without a REQUIRED one.
dropped=""
for want in $(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment"); do
    grep -qx "$want" .config || dropped="$dropped $want"
done
for want in $REQUIRED; do
    grep -qx "$want" .config || die "Kconfig did not keep $want, which cmaprof needs ($pkg; see $fragment)"
done
[ -z "$dropped" ] || say "warning: $pkg's Kconfig dropped:$dropped (not needed by cmaprof; see $fragment)"
if [ "$config_only" -eq 1 ]; then
    say "configured $pkg $version (--config-only: no build)"
    exit 0
fi

make -j"$(nproc)" bzImage >>"$log" 2>&1 || failed "make bzImage failed"
release=$(make -s kernelrelease)

tmp=$dir.tmp.$$
rm -rf "$tmp"
mkdir -p "$tmp"
cp arch/x86/boot/bzImage "$tmp/bzImage-$release-cma"
cp .config "$tmp/config-$release-cma"
printf '%s %s\nfragment %s sha256 %s\ndropped by Kconfig:%s\n' "$pkg" "$version" "$fragment" \
    "$(sha256sum "$fragment" | cut -d' ' -f1)" "${dropped:- none}" >"$tmp/SOURCE"
rm -rf "$dir"
mv "$tmp" "$dir"
say "built $dir/bzImage-$release-cma"
echo "$dir/bzImage-$release-cma"
