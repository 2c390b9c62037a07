# Sourced by testbed/setup.sh and testbed/build-kernel.sh: cache layout and a
# private apt configuration that fetches Debian kernel packages without
# touching the machine's own apt sources or lists.
# shellcheck shell=bash

# HOME may be unset in a CI environment; fall back to the passwd entry.
KSCAND_HOME=${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}
KSCAND_CACHE=${KSCAND_CACHE:-${XDG_CACHE_HOME:-$KSCAND_HOME/.cache}/kscand}
KERNELS_DIR=$KSCAND_CACHE/kernels
APT_DIR=$KSCAND_CACHE/apt
# Debian suite that carries 6.12 for bookworm; trixie also works.
KERNEL_SUITE=${KSCAND_KERNEL_SUITE:-bookworm-backports}
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

# The Debian archive URI the machine already uses (no host name is hard-coded
# here); override with KSCAND_DEBIAN_MIRROR.
debian_mirror() {
    if [[ -n ${KSCAND_DEBIAN_MIRROR:-} ]]; then
        printf '%s\n' "$KSCAND_DEBIAN_MIRROR"
        return
    fi
    local uri
    uri=$(apt-get indextargets --format '$(REPO_URI)' 2>/dev/null \
        | grep -E '/debian/?$' | head -n1)
    [[ -n $uri ]] || die "no Debian archive in the machine's apt sources; set KSCAND_DEBIAN_MIRROR"
    printf '%s\n' "$uri"
}

# apt options that point at the private sources list and lists directory.
APT_PRIVATE_OPTS=(
    -o "Dir::Etc::SourceList=$APT_DIR/sources.list"
    -o "Dir::Etc::SourceParts=$APT_DIR/sources.list.d"
    -o "Dir::State::Lists=$APT_DIR/lists"
    -o "Dir::Cache::Archives=$APT_DIR/archives"
    -o "APT::Sandbox::User=root"
)

# Refresh the private package lists for $KERNEL_SUITE (a few hundred kB).
apt_private_update() {
    mkdir -p "$APT_DIR/sources.list.d" "$APT_DIR/lists/partial" "$APT_DIR/archives/partial" \
        "$APT_DIR/debs"
    local mirror
    mirror=$(debian_mirror)
    printf 'deb [signed-by=%s] %s %s main\n' "$DEBIAN_KEYRING" "$mirror" "$KERNEL_SUITE" \
        > "$APT_DIR/sources.list"
    apt-get "${APT_PRIVATE_OPTS[@]}" -qq update \
        || die "apt-get update of the private $KERNEL_SUITE list failed"
}

# Print the candidate version of package $1 in the private lists.
apt_private_version() {
    apt-cache "${APT_PRIVATE_OPTS[@]}" policy "$1" | sed -n 's/^ *Candidate: //p' | grep -v '(none)'
}

# Download package $1 (name=version) into $APT_DIR/debs; print the .deb path.
apt_private_download() {
    local spec=$1 name=${1%%=*}
    (cd "$APT_DIR/debs" && apt-get "${APT_PRIVATE_OPTS[@]}" -qq download "$spec") \
        || die "apt-get download $spec failed"
    local deb
    deb=$(ls -t "$APT_DIR/debs/${name}_"*.deb | head -n1)
    [[ -f $deb ]] || die "downloaded $spec but no .deb found"
    printf '%s\n' "$deb"
}

# Point $KERNELS_DIR/$1 (a stable name) at directory $2.
link_kernel() {
    ln -sfn "$2" "$KERNELS_DIR/$1"
}
