#!/usr/bin/env bash
# Build the "idle" guest kernel: Debian's linux-source-6.12 with a minimal
# config (allnoconfig + testbed/kscand.config), which has
# CONFIG_IDLE_PAGE_TRACKING (Debian's stock image does not).
#
# The bzImage is cached in $KSCAND_CACHE/kernels/idle-<key>/, key = sha256 of
# the fragment and the source package version; a cached image skips the
# build. $KSCAND_CACHE/kernels/idle points at the current one.
#
# Usage: testbed/build-kernel.sh [--print-path]
# Needs flex, bison, bc, libelf-dev, libssl-dev, build-essential (setup.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=testbed/common.sh
source "$HERE/common.sh"

FRAGMENT=$HERE/kscand.config
SOURCE_PKG=linux-source-6.12
JOBS=${KSCAND_BUILD_JOBS:-$(nproc)}

# Lines of the fragment that set an option: "CONFIG_X=val" or "# CONFIG_X is not set".
fragment_settings() {
    grep -E '^(CONFIG_[A-Za-z0-9_]+=|# CONFIG_[A-Za-z0-9_]+ is not set)' "$1"
}

# Print every fragment setting that the final .config ($2) does not carry.
dropped_settings() {
    local fragment=$1 config=$2 line name
    while IFS= read -r line; do
        if [[ $line == "# "* ]]; then
            name=${line#\# }
            name=${name%% *}
            grep -qE "^$name=[ym]" "$config" && printf '%s (got %s)\n' "$line" \
                "$(grep -E "^$name=" "$config")"
        elif [[ $line == *=n ]]; then
            name=${line%%=*}
            grep -qE "^$name=[ym]" "$config" && printf '%s (got %s)\n' "$line" \
                "$(grep -E "^$name=" "$config")"
        elif ! grep -qxF "$line" "$config"; then
            name=${line%%=*}
            printf '%s (got %s)\n' "$line" "$(grep -E "^$name=" "$config" || echo 'not set')"
        fi
    done < <(fragment_settings "$fragment")
    return 0
}

# Unpack the kernel source tree of $1 (package version); print its path.
unpack_source() {
    local version=$1 src_root=$KSCAND_CACHE/src/$SOURCE_PKG-$version
    if [[ -f $src_root/linux/Makefile ]]; then
        printf '%s\n' "$src_root/linux"
        return
    fi
    local deb tmp
    deb=$(apt_private_download "$SOURCE_PKG=$version")
    tmp=$(mktemp -d "$KSCAND_CACHE/src/.unpack.XXXXXX")
    log "unpacking $(basename "$deb")"
    dpkg -x "$deb" "$tmp/pkg"
    mkdir -p "$tmp/linux"
    tar -xf "$tmp/pkg/usr/src/$SOURCE_PKG.tar.xz" -C "$tmp/linux" --strip-components=1
    rm -rf "$tmp/pkg" "$src_root"
    mkdir -p "$(dirname "$src_root")"
    mv "$tmp" "$src_root"
    rm -f "$deb"
    printf '%s\n' "$src_root/linux"
}

main() {
    local print_path=0
    [[ ${1:-} == --print-path ]] && print_path=1

    for tool in make gcc flex bison bc; do
        command -v "$tool" >/dev/null || die "$tool is missing: run testbed/setup.sh first"
    done
    [[ -f /usr/include/gelf.h ]] || die "libelf-dev is missing: run testbed/setup.sh first"
    [[ -f /usr/include/openssl/ssl.h ]] || die "libssl-dev is missing: run testbed/setup.sh first"

    mkdir -p "$KERNELS_DIR" "$KSCAND_CACHE/src"
    apt_private_update
    local version key out
    version=$(apt_private_version "$SOURCE_PKG") \
        || die "$SOURCE_PKG not found in $KERNEL_SUITE"
    key=$( { cat "$FRAGMENT"; printf '%s\n' "$SOURCE_PKG=$version"; } | sha256sum | cut -c1-16)
    out=$KERNELS_DIR/idle-$key
    if [[ -f $out/bzImage ]]; then
        log "cached: $out/bzImage ($SOURCE_PKG $version)"
        link_kernel idle "idle-$key"
        ((print_path)) && printf '%s\n' "$out/bzImage"
        return 0
    fi

    local src obj started elapsed
    src=$(unpack_source "$version")
    obj=$KSCAND_CACHE/build/idle-$key
    rm -rf "$obj"
    mkdir -p "$obj"
    started=$(date +%s)
    log "configuring in $obj (allnoconfig + $(basename "$FRAGMENT"))"
    make -s -C "$src" O="$obj" ARCH=x86_64 KCONFIG_ALLCONFIG="$FRAGMENT" allnoconfig
    make -s -C "$src" O="$obj" ARCH=x86_64 olddefconfig
    local dropped
    dropped=$(dropped_settings "$FRAGMENT" "$obj/.config")
    if [[ -n $dropped ]]; then
        printf '[testbed] error: these %s settings did not survive (missing dependency?):\n%s\n' \
            "$(basename "$FRAGMENT")" "$dropped" >&2
        exit 1
    fi
    log "building bzImage with -j$JOBS (log: $obj/build.log)"
    if ! make -C "$src" O="$obj" ARCH=x86_64 -j"$JOBS" bzImage > "$obj/build.log" 2>&1; then
        tail -n 40 "$obj/build.log" >&2
        die "kernel build failed; full log in $obj/build.log"
    fi
    elapsed=$(( $(date +%s) - started ))

    local tmp
    tmp=$(mktemp -d "$KERNELS_DIR/.idle.XXXXXX")
    cp "$obj/arch/x86/boot/bzImage" "$tmp/bzImage"
    cp "$obj/.config" "$tmp/config"
    printf '%s\n' "$SOURCE_PKG=$version" > "$tmp/source"
    printf '%s\n' "$elapsed" > "$tmp/build-seconds"
    rm -rf "$out"
    mv "$tmp" "$out"
    chmod 755 "$out"
    link_kernel idle "idle-$key"
    # The object tree is 1+ GB and only useful for rebuilding this same key.
    rm -rf "$obj"
    log "built $out/bzImage in ${elapsed}s"
    ((print_path)) && printf '%s\n' "$out/bzImage"
    return 0
}

main "$@"
