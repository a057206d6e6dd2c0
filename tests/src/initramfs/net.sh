# virtio-net: eth0 gets tessera.ip=<addr>/<len>. With tessera.peer=<addr>
# it pings the peer three times; without it, it configures and waits for
# the peer to ping (the harness stops it).
. /etc/tessera/lib.sh

wait_for /sys/class/net/eth0 || fail "eth0 did not appear"
[ -n "$TESSERA_IP" ] || fail "no tessera.ip=<addr>/<len> on the command line"
ip link set lo up
ip addr add "$TESSERA_IP" dev eth0 || fail "cannot set $TESSERA_IP on eth0"
ip link set eth0 up || fail "cannot bring eth0 up"
echo "net: eth0 is $TESSERA_IP ($(cat /sys/class/net/eth0/address))"

if [ -z "$TESSERA_PEER" ]; then
    echo "TESSERA-LINUX-NET ready $TESSERA_IP"
    while true; do sleep 3600; done
fi

# The peer may still be booting: keep trying for a while.
tries=30
until ping -c 3 -W 2 "$TESSERA_PEER"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || fail "no reply from $TESSERA_PEER"
    sleep 1
done
