# Devices across a device-model restart: the device model serving this
# guest is killed on purpose (its `crash-after` bootarg) while this loop
# reads the disk and the RNG; the loop must go on, and find the same disk
# contents, once the device model's next generation has taken the devices
# over (tests/images/linux-dm-restart).
. /etc/tessera/lib.sh

disk=/dev/vda
rounds=${TESSERA_ROUNDS:-40}

wait_for "$disk" || fail "$disk did not appear"
wait_for /dev/hwrng || fail "/dev/hwrng did not appear"

dd if=/dev/urandom of=/tmp/pattern bs=4096 count=16 2>/dev/null ||
    fail "cannot read /dev/urandom"
want=$(sha256sum /tmp/pattern | cut -d' ' -f1)
dd if=/tmp/pattern of="$disk" bs=4096 conv=fsync 2>/dev/null ||
    fail "cannot write the pattern to $disk"
echo "dm-restart: wrote 64 KiB to $disk, sha256 $want"

i=0
while [ "$i" -lt "$rounds" ]; do
    got=$(dd if="$disk" bs=4096 count=16 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "round $i: $disk holds $got, not $want"
    n=$(dd if=/dev/hwrng bs=64 count=1 2>/dev/null | wc -c)
    [ "$n" -gt 0 ] || fail "round $i: /dev/hwrng gave nothing"
    i=$((i + 1))
done
echo "dm-restart: $rounds rounds of disk and rng reads passed"
