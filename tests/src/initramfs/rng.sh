# virtio-rng: the kernel picked the virtio RNG and /dev/hwrng yields data.
. /etc/tessera/lib.sh

current=
for file in /sys/class/misc/hw_random/rng_current \
    /sys/devices/virtual/misc/hw_random/rng_current; do
    if [ -r "$file" ]; then
        current=$(cat "$file")
        break
    fi
done
case "$current" in
    virtio_rng*) ;;
    *) fail "rng_current is '$current', not virtio_rng" ;;
esac

wait_for /dev/hwrng || fail "/dev/hwrng did not appear"
dd if=/dev/hwrng of=/tmp/rng bs=4096 count=1 2>/dev/null || fail "cannot read /dev/hwrng"
size=$(wc -c < /tmp/rng)
[ "$size" -gt 0 ] || fail "/dev/hwrng returned no data"
od -An -tx1 -v /tmp/rng | grep -q '[1-9a-f]' || fail "/dev/hwrng returned $size zero bytes"
echo "rng: $current gave $size bytes"
