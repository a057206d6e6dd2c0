# The blk_read benchmark: read the whole of /dev/vda once, sequentially,
# bypassing the page cache, and print
# `BENCHRESULT blk_read ops=<MiB> ticks=<counter ticks>`. Under
# `-icount shift=4` a counter tick is one instruction, so `cargo xtask bench`
# reports instructions per MiB, Tessera's device model against QEMU's.
. /etc/tessera/lib.sh

disk=/dev/vda
wait_for "$disk" || fail "$disk did not appear"
sectors=$(cat /sys/block/vda/size)
mib=$((sectors / 2048))
[ "$mib" -gt 0 ] || fail "$disk holds less than 1 MiB"
# Warm up: the first dd pays for paging in dd itself.
dd if="$disk" of=/dev/null bs=1M count=1 iflag=direct 2>/dev/null || fail "cannot read $disk"
set -- $(/bin/cntvct)
start=$1
dd if="$disk" of=/dev/null bs=1M count="$mib" iflag=direct 2>/dev/null || fail "cannot read $disk"
set -- $(/bin/cntvct)
echo "BENCHRESULT blk_read ops=$mib ticks=$(($1 - start))"
