# Sourced by bin/test (when OVERLAY_REQUIRE_POSTGRES=1): make sure a PostgreSQL server
# (initdb, pg_ctl) is installed, for the tests that start a throwaway cluster of their own
# (tests/directory/postgres.py).  Usage: _postgres_ready
# Installs only as root with apt-get (Debian's postgresql package); elsewhere those tests
# skip, or fail under OVERLAY_REQUIRE_POSTGRES=1.  OVERLAY_POSTGRES_INSTALL=0 turns
# installing off.  No cluster of the package's own is created or started: the tests run
# theirs in a temporary directory as an unprivileged user and stop it afterwards.

_postgres_installed() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1
}

_postgres_ready() {
    _postgres_installed && return 0
    [ "${OVERLAY_POSTGRES_INSTALL:-1}" != 0 ] || return 0
    [ "$(id -u)" = 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || return 0
    echo "overlay: installing postgresql for the directory's PostgreSQL tests" \
        "(apt-get install, first run only)" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Debian's package would create and start a "main" cluster: the tests need none.
    mkdir -p /etc/postgresql-common
    [ -e /etc/postgresql-common/createcluster.conf ] ||
        echo "create_main_cluster = false" >/etc/postgresql-common/createcluster.conf
    if ! apt-get install -y -q --no-install-recommends postgresql >&2; then
        echo "overlay: apt-get install failed; running apt-get update and trying again" >&2
        if ! { apt-get update -q >&2 &&
            apt-get install -y -q --no-install-recommends postgresql >&2; }; then
            echo "overlay: could not install postgresql; the PostgreSQL tests cannot run" >&2
            return 1
        fi
    fi
}
