#!/usr/bin/env bash
# Install what the QEMU guest testbed needs; idempotent, run as root.
#  - Debian packages: qemu-system-x86, busybox-static and kmod (virtme-ng's initramfs
#    for a kernel with modules) and the kernel build tools.
#  - virtme-ng into the project's .venv (the `testbed` extra).
#  - Debian's stock 6.12 kernel image ($KSCAND_KERNEL_SUITE, default
#    bookworm-backports), unpacked with dpkg -x into
#    $KSCAND_CACHE/kernels/stock-<version>/; $KSCAND_CACHE/kernels/stock points
#    at it. The machine's apt sources are not changed: a private sources list
#    and lists directory are used for the download.
#
# Usage: testbed/setup.sh        (as root, from anywhere)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
# shellcheck source=testbed/common.sh
source "$HERE/common.sh"

DEB_PACKAGES=(qemu-system-x86 busybox-static kmod flex bison bc libelf-dev libssl-dev build-essential
    redis-server)  # redis-server: the program tests/guest/test_guest_record.py records
VENV=$REPO/.venv

install_debs() {
    local missing=() pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    if ((${#missing[@]} == 0)); then
        log "Debian packages present"
        return
    fi
    [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root"
    log "installing ${missing[*]}"
    apt-get -qq update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" > /dev/null
}

install_virtme_ng() {
    if [[ -x $VENV/bin/vng && -x $VENV/bin/virtme-run ]]; then
        log "virtme-ng present in .venv"
        return
    fi
    [[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
    log "installing virtme-ng into .venv"
    "$VENV/bin/python" -m pip install -q -e "$REPO[test,testbed]"
}

# Unpack Debian's stock 6.12 image; print nothing, link kernels/stock.
fetch_stock_kernel() {
    mkdir -p "$KERNELS_DIR"
    apt_private_update
    local meta_version image_pkg
    meta_version=$(apt_private_version linux-image-amd64) \
        || die "linux-image-amd64 not found in $KERNEL_SUITE"
    image_pkg=$(apt-cache "${APT_PRIVATE_OPTS[@]}" show "linux-image-amd64=$meta_version" \
        | sed -n 's/^Depends: \(linux-image-6\.12[^ ,]*\).*/\1/p' | head -n1)
    [[ -n $image_pkg ]] || die "linux-image-amd64 $meta_version in $KERNEL_SUITE is not a 6.12 kernel"
    local version out
    version=$(apt_private_version "$image_pkg") || die "$image_pkg has no candidate"
    out=$KERNELS_DIR/stock-${image_pkg#linux-image-}
    if [[ -f $out/vmlinuz ]]; then
        log "cached: $out/vmlinuz ($image_pkg $version)"
        link_kernel stock "$(basename "$out")"
        return
    fi
    local deb tmp
    deb=$(apt_private_download "$image_pkg=$version")
    tmp=$(mktemp -d "$KERNELS_DIR/.stock.XXXXXX")
    dpkg -x "$deb" "$tmp"
    local image
    image=$(ls "$tmp"/boot/vmlinuz-* 2>/dev/null | head -n1)
    [[ -n $image ]] || die "$(basename "$deb") has no boot/vmlinuz-*"
    # virtme-ng finds the modules by walking up from the image to lib/modules.
    ln -s "boot/$(basename "$image")" "$tmp/vmlinuz"
    printf '%s\n' "$image_pkg=$version" > "$tmp/source"
    chmod 755 "$tmp"
    rm -rf "$out"
    mv "$tmp" "$out"
    rm -f "$deb"
    link_kernel stock "$(basename "$out")"
    log "unpacked $image_pkg $version into $out"
}

main() {
    install_debs
    install_virtme_ng
    fetch_stock_kernel
}

main "$@"
