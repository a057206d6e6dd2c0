# Helpers sourced by the test scripts in /etc/tessera.

# Records why the test failed (init prints it on the result line) and stops.
fail() {
    echo "$*" > /tmp/tessera-fail
    echo "$TESSERA_TEST: $*"
    exit 1
}

# Gives eth0 the address $1 (<addr>/<len>) and brings it and lo up.
net_up() {
    wait_for /sys/class/net/eth0 || return 1
    ip link set lo up
    ip addr add "$1" dev eth0 || return 1
    ip link set eth0 up || return 1
    echo "net: eth0 is $1 ($(cat /sys/class/net/eth0/address))"
}

# Waits up to $2 tenths of a second (default 100) for path $1 to appear:
# devices show up asynchronously after their module is loaded.
wait_for() {
    tries=${2:-100}
    while [ ! -e "$1" ]; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || return 1
        sleep 0.1
    done
}
