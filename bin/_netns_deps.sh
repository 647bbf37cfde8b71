# Sourced by bin/nat-lab (always) and bin/test (when OVERLAY_REQUIRE_NETNS=1): make sure the
# real-NAT lab's system tools, ip, iptables and conntrack, are installed.  Usage: _netns_deps_ready
# Installs only as root with apt-get (Debian, Ubuntu); elsewhere the lab itself says
# what is missing.  OVERLAY_NETNS_INSTALL=0 turns installing off (the tests set it).

_netns_has() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

_netns_deps_ready() {
    _netns_has ip && _netns_has iptables && _netns_has conntrack && return 0
    [ "${OVERLAY_NETNS_INSTALL:-1}" != 0 ] || return 0
    [ "$(id -u)" = 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    local packages="iproute2 iptables conntrack"
    echo "overlay: installing $packages for the NAT lab (apt-get install, first run only)" >&2
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends $packages >&2; then
        echo "overlay: apt-get install failed; running apt-get update and trying again" >&2
        if ! { apt-get update -q >&2 &&
            apt-get install -y -q --no-install-recommends $packages >&2; }; then
            echo "overlay: could not install $packages; the NAT lab cannot run" >&2
            return 1
        fi
    fi
}
