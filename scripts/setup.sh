#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0-only
#
# Prepare a Debian 12 machine for cmaprof; run as root by `make` (every target that needs
# the environment). Idempotent: a second run changes nothing and says so in a few seconds.
#
#   1. Debian packages: BCC (python3-bpfcc, bpfcc-tools), headers, venv, QEMU, bpftrace,
#      perf; `apt-get update` only when something is missing.
#   2. Kernel headers for BCC, chosen as BCC's loader does: /lib/modules/$(uname -r)/build
#      (or source) with include/linux/kconfig.h, else /sys/kernel/kheaders.tar.xz. When
#      neither exists: linux-headers-$(uname -r) if apt has it, else links to the newest
#      Debian headers, with a loud warning (another kernel version).
#   3. tracefs, debugfs (BCC 0.26 looks for /sys/kernel/debug/tracing first) and
#      securityfs (for the lockdown mode) mounted.
#   4. .venv from /usr/bin/python3 with --system-site-packages (Debian's BCC is only
#      importable from that interpreter); `pip install -e '.[test,vm]'` again only when
#      setup.cfg or pyproject.toml changed (content hash in .venv/.setup-stamp).
#
# Usage: scripts/setup.sh [make-target]   (the target only words the "run as root" hint)

set -Eeuo pipefail

TARGET=${1:-setup}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$REPO/.venv
STAMP=$VENV/.setup-stamp
SYS_PY=/usr/bin/python3
T0=$SECONDS
CHANGES=()
STEP="start"
LOG=""

say() { printf 'cmaprof setup: %s\n' "$*"; }
warn() { printf 'cmaprof setup: WARNING: %s\n' "$*" >&2; }
die() {
    trap - ERR
    printf 'cmaprof setup: ERROR: %s\n' "$*" >&2
    exit 1
}
on_err() {
    local rc=$? line=$1
    trap - ERR
    printf 'cmaprof setup: ERROR: %s failed (exit %s, setup.sh line %s: %s)\n' \
        "$STEP" "$rc" "$line" "$BASH_COMMAND" >&2
    exit 1
}
trap 'on_err $LINENO' ERR
trap '[[ -z $LOG ]] || rm -f "$LOG"' EXIT

# run WHAT CMD...: run quietly; on failure show the command's output and stop.
run() {
    local what=$1 rc=0
    shift
    STEP=$what
    "$@" >"$LOG" 2>&1 || rc=$?
    if ((rc != 0)); then
        trap - ERR
        printf 'cmaprof setup: ERROR: %s failed (exit %s): %s\n' "$what" "$rc" "$*" >&2
        tail -n 40 "$LOG" | sed 's/^/    /' >&2
        exit 1
    fi
}

# --- preconditions ---------------------------------------------------------------------

if [[ $(id -u) -ne 0 ]]; then
    die "run as root, e.g. sudo make $TARGET (installs packages, links kernel headers," \
        "mounts tracefs/debugfs; cmaprof itself needs root for BPF)"
fi
if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null; then
    die "this script supports Debian 12 (bookworm) only; elsewhere install BCC's Python" \
        "bindings, kernel headers and python3-venv by hand, then create .venv with" \
        "--system-site-packages"
fi
LOG=$(mktemp /tmp/cmaprof-setup.XXXXXX)
REL=$(uname -r)
KDIR=/lib/modules/$REL
ARCH=$(dpkg --print-architecture)
export DEBIAN_FRONTEND=noninteractive

# --- 1. packages -----------------------------------------------------------------------

# kmod: BCC runs `modprobe kheaders` when kheaders is a module; busybox-static and
# qemu-system-x86: virtme-ng guests (tests/vm); xz-utils, tar: BCC unpacks kheaders.
# trace-cmd: capturing text for `cmaprof import` (tests/data/traces/README.md).
PKGS=(python3-bpfcc bpfcc-tools "linux-headers-$ARCH" python3-venv qemu-system-x86 bpftrace bpftool
      linux-perf busybox-static kmod xz-utils tar trace-cmd)

installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]; }

APT_UPDATED=0
apt_update() {
    if ((APT_UPDATED == 0)); then
        run "apt-get update" apt-get update -qq
        say "apt: package lists updated"
        APT_UPDATED=1
    fi
}
apt_install() {
    apt_update
    run "apt-get install $*" apt-get install -y -qq -o Dpkg::Use-Pty=0 "$@"
    CHANGES+=("installed $*")
    say "installed: $*"
}
apt_has() {
    apt-cache show --no-all-versions "$1" 2>/dev/null | grep -q '^Package:'
}

STEP="checking packages"
MISSING=()
for p in "${PKGS[@]}"; do
    installed "$p" || MISSING+=("$p")
done
if ((${#MISSING[@]})); then
    apt_install "${MISSING[@]}"
else
    say "packages: all ${#PKGS[@]} installed (${PKGS[*]})"
fi

# --- 2. kernel headers -----------------------------------------------------------------

STEP="kernel headers"
# Mirrors BCC's loader: source/ when build/ and source/ are both directories, else build/;
# usable when that tree has include/linux/kconfig.h.
headers_usable() {
    local kpath=$KDIR/build
    [[ -d $KDIR/build && -d $KDIR/source ]] && kpath=$KDIR/source
    [[ -f $kpath/include/linux/kconfig.h ]]
}
headers_release() {
    sed -n 's/^#define UTS_RELEASE "\(.*\)"$/\1/p' \
        "$KDIR/build/include/generated/utsrelease.h" 2>/dev/null || true
}
kheaders_available() {
    [[ -e /sys/kernel/kheaders.tar.xz ]] || modinfo kheaders >/dev/null 2>&1
}
# A link made by this script: build -> /usr/src/linux-headers-<version>-<arch>.
our_link() {
    [[ -L $KDIR/build && $(readlink "$KDIR/build") == /usr/src/linux-headers-*-"$ARCH" ]]
}
# The newest plain Debian flavour (no -rt-, -cloud-) with its -common tree.
newest_debian_headers() {
    local d name
    for d in /usr/src/linux-headers-*-"$ARCH"; do
        name=${d##*/}
        [[ $name =~ ^linux-headers-[0-9]+\.[0-9]+(\.[0-9]+)?-[0-9]+-$ARCH$ ]] || continue
        [[ -f ${d%-"$ARCH"}-common/include/linux/kconfig.h ]] || continue
        [[ -f $d/include/generated/utsrelease.h ]] || continue
        printf '%s\n' "$d"
    done | sort -V | tail -n 1
}
remove_our_links() {
    rm -f "$KDIR/build"
    [[ -L $KDIR/source ]] && rm -f "$KDIR/source"
    return 0
}
link_fallback() {
    local why=$1 arch_tree common hdr
    arch_tree=$(newest_debian_headers)
    if [[ -z $arch_tree ]]; then
        die "no kernel headers for $REL ($why) and no Debian headers in /usr/src to fall" \
            "back on (is linux-headers-$ARCH installed?); boot a kernel built with" \
            "CONFIG_IKHEADERS or install this kernel's headers in $KDIR/build"
    fi
    common=${arch_tree%-"$ARCH"}-common
    if [[ -e $KDIR/build && ! -L $KDIR/build ]]; then
        die "$KDIR/build is a directory without usable headers (no include/linux/kconfig.h);" \
            "move it away (mv $KDIR/build $KDIR/build.broken) and run again"
    fi
    if [[ -e $KDIR/source && ! -L $KDIR/source ]]; then
        die "$KDIR/source is a real directory; move it away and run again"
    fi
    mkdir -p "$KDIR"
    ln -sfn "$arch_tree" "$KDIR/build"
    ln -sfn "$common" "$KDIR/source"
    hdr=${arch_tree#/usr/src/linux-headers-}
    CHANGES+=("linked fallback headers $hdr")
    {
        printf '\n%s\n' "########################################################################"
        printf '%s\n' "#  WARNING: KERNEL HEADERS OF ANOTHER KERNEL VERSION"
        printf '%s\n' "#"
        printf '%s\n' "#  The running kernel $REL has no headers:"
        printf '%s\n' "#    $why."
        printf '%s\n' "#  Linked  $KDIR/build  -> $arch_tree"
        printf '%s\n' "#          $KDIR/source -> $common"
        printf '%s\n' "#  These are Debian's $hdr headers: struct layouts and page-flag"
        printf '%s\n' "#  shifts may differ from the running kernel. BCC will compile against"
        printf '%s\n' "#  them; cmaprof validates what it reads from struct page at start-up."
        printf '%s\n' "#  Better: boot a kernel with CONFIG_IKHEADERS, or install its headers."
        printf '%s\n\n' "########################################################################"
    } >&2
    say "kernel headers: linked fallback $KDIR/build -> $arch_tree (ANOTHER VERSION, see above)"
}

if headers_usable; then
    hrel=$(headers_release)
    if [[ $hrel == "$REL" ]]; then
        say "kernel headers: $KDIR/build matches the running kernel"
    elif our_link && [[ -e /sys/kernel/kheaders.tar.xz ]]; then
        remove_our_links
        CHANGES+=("removed fallback header links")
        say "kernel headers: removed the fallback links to $hrel headers: BCC will use" \
            "/sys/kernel/kheaders.tar.xz of the running kernel"
    elif our_link && apt_has "linux-headers-$REL"; then
        remove_our_links
        apt_install "linux-headers-$REL"
    elif our_link && newest=$(newest_debian_headers) && [[ -n $newest ]] &&
        [[ $newest != "$(readlink "$KDIR/build")" ]]; then
        link_fallback "no $KDIR/build of its own, no kheaders, no linux-headers-$REL in apt"
    else
        say "kernel headers: $KDIR/build -> $(readlink -f "$KDIR/build")"
        warn "kernel headers are $hrel's, not the running $REL's: struct layouts and" \
            "page-flag shifts may differ (cmaprof validates struct page at start-up)"
    fi
elif kheaders_available; then
    say "kernel headers: kheaders of the running kernel (BCC unpacks /sys/kernel/kheaders.tar.xz)"
else
    apt_update
    if apt_has "linux-headers-$REL"; then
        [[ -L $KDIR/build ]] && remove_our_links
        apt_install "linux-headers-$REL"
        headers_usable || die "linux-headers-$REL is installed but $KDIR/build has no" \
            "include/linux/kconfig.h"
    else
        link_fallback "no $KDIR/build, no /sys/kernel/kheaders.tar.xz, no linux-headers-$REL in apt"
    fi
fi

# --- 3. pseudo file systems ------------------------------------------------------------

mount_fs() { # TYPE DIR REQUIRED
    local type=$1 dir=$2 required=$3
    STEP="mount $type"
    if [[ ! -d $dir ]]; then
        [[ $required == yes ]] && die "$dir does not exist: the kernel has no $type"
        warn "$dir does not exist: the kernel has no $type"
        return 0
    fi
    if mountpoint -q "$dir"; then
        say "$type: mounted at $dir"
    elif mount -t "$type" nodev "$dir" 2>"$LOG"; then
        CHANGES+=("mounted $type")
        say "$type: mounted it at $dir"
    elif [[ $required == yes ]]; then
        die "mount -t $type nodev $dir failed: $(cat "$LOG")"
    else
        warn "mount -t $type nodev $dir failed: $(cat "$LOG")"
    fi
}
mount_fs tracefs /sys/kernel/tracing yes
mount_fs debugfs /sys/kernel/debug no
mount_fs securityfs /sys/kernel/security no

# --- 4. virtual environment ------------------------------------------------------------

STEP="virtual environment"
cd "$REPO"
venv_cfg_ok() {
    [[ -x $VENV/bin/python ]] &&
        grep -qx 'include-system-site-packages = true' "$VENV/pyvenv.cfg" 2>/dev/null &&
        grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null
}
if [[ ! -x $VENV/bin/python ]]; then
    run "creating .venv" "$SYS_PY" -m venv --system-site-packages "$VENV"
    rm -f "$STAMP"
    CHANGES+=("created .venv")
    say ".venv: created with $SYS_PY --system-site-packages"
elif ! venv_cfg_ok; then
    # In place: packages stay, pyvenv.cfg and bin/python now point at /usr/bin/python3.
    run "repairing .venv" "$SYS_PY" -m venv --system-site-packages "$VENV"
    rm -f "$STAMP"
    CHANGES+=("repaired .venv")
    say ".venv: was not made from $SYS_PY with --system-site-packages; repaired in place"
fi

want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [[ $want != "$have" || ! -x $VENV/bin/cmaprof ]]; then
    run "pip install -e '.[test,vm]'" "$VENV/bin/python" -m pip install -q \
        --disable-pip-version-check -e ".[test,vm]"
    printf '%s\n' "$want" >"$STAMP"
    CHANGES+=("pip install -e .[test,vm]")
    say ".venv: installed cmaprof (editable) with extras test, vm"
else
    say ".venv: up to date (setup.cfg and pyproject.toml unchanged)"
fi

# --- 5. BCC from the venv --------------------------------------------------------------

STEP="checking BCC"
BCC_CHECK='from cmaprof.collectors.bccload import import_bcc, describe; print(describe(import_bcc()))'
if ! out=$("$VENV/bin/python" -c "$BCC_CHECK" 2>&1); then
    if [[ $out == *"unrelated PyPI package"* && $out == *"$VENV"* ]]; then
        run "pip uninstall bcc" "$VENV/bin/python" -m pip uninstall -y -q bcc
        CHANGES+=("removed PyPI bcc from .venv")
        say ".venv: removed the PyPI package bcc (unrelated; it shadowed Debian's BCC)"
        out=$("$VENV/bin/python" -c "$BCC_CHECK" 2>&1) || die "$(tail -n 1 <<<"$out")"
    else
        die "BCC is not importable from .venv: $(tail -n 1 <<<"$out")"
    fi
fi
say "BCC: $out"

# --- done ------------------------------------------------------------------------------

if ((${#CHANGES[@]})); then
    say "done in $((SECONDS - T0)) s; changed: $(IFS=';'; echo "${CHANGES[*]}" | sed 's/;/; /g')"
else
    say "all is fine, nothing to change ($((SECONDS - T0)) s); next: .venv/bin/cmaprof doctor"
fi
