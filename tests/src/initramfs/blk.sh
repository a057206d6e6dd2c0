# virtio-blk: a random 4 MiB pattern survives the page cache, and a reboot.
#
# `tessera.phase=write` (the default) writes the pattern to /dev/vda, then
# its SHA-256 in the sector just after it, and reads the pattern back
# around the cache. `tessera.phase=verify` only re-reads the disk and checks
# the pattern against the stored sum: a second boot from the same disk
# proves the data reached the backing file. `tessera.phase=auto` verifies
# when the disk holds a stored sum and otherwise writes, then asks init for
# a reboot (of this guest only, under Tessera), so one boot command line
# covers both boots.
. /etc/tessera/lib.sh

disk=/dev/vda
sectors=8192 # 4 MiB in 512-byte sectors; the stored sum follows

wait_for "$disk" || fail "$disk did not appear"

sum_of_disk() {
    echo 3 > /proc/sys/vm/drop_caches
    dd if="$disk" bs=1M count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1
}

stored_sum() {
    dd if="$disk" bs=512 skip=$sectors count=1 2>/dev/null | head -c 64
}

phase=${TESSERA_PHASE:-write}
if [ "$phase" = auto ]; then
    case "$(stored_sum)" in
        *[!0-9a-f]* | "") phase=write; touch /tmp/tessera-reboot ;;
        *) phase=verify ;;
    esac
fi

case "$phase" in
    write)
        dd if=/dev/urandom of=/tmp/pattern bs=1M count=4 2>/dev/null ||
            fail "cannot read /dev/urandom"
        want=$(sha256sum /tmp/pattern | cut -d' ' -f1)
        dd if=/tmp/pattern of="$disk" bs=1M conv=fsync 2>/dev/null ||
            fail "cannot write the pattern to $disk"
        echo "$want" | dd of="$disk" bs=512 seek=$sectors conv=sync,fsync 2>/dev/null ||
            fail "cannot write the checksum to $disk"
        rm -f /tmp/pattern
        sync
        got=$(sum_of_disk)
        [ "$got" = "$want" ] || fail "read back $got, wrote $want"
        echo "blk: wrote and read back 4 MiB, sha256 $want"
        ;;
    verify)
        want=$(stored_sum)
        case "$want" in
            *[!0-9a-f]* | "") fail "no checksum stored on $disk (was the write phase run?)" ;;
        esac
        got=$(sum_of_disk)
        [ "$got" = "$want" ] || fail "the disk holds $got, its stored sum is $want"
        echo "blk: 4 MiB on $disk still match sha256 $want"
        ;;
    *)
        fail "unknown tessera.phase=$TESSERA_PHASE (write, verify or auto)"
        ;;
esac
