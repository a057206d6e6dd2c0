# virtio-net: eth0 gets tessera.ip=<addr>/<len>. With tessera.peer=<addr>
# it pings the peer three times; without it, it configures and waits for
# the peer to ping (the harness stops it).
. /etc/tessera/lib.sh

[ -n "$TESSERA_IP" ] || fail "no tessera.ip=<addr>/<len> on the command line"
net_up "$TESSERA_IP" || fail "cannot bring eth0 up as $TESSERA_IP"

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
