//! MirrorMaker 2's checkpoint and offset-sync records (Kafka struct encoding), as the
//! failover reads them from the DR region. The first two bytes split key from value.
#![no_main]

use guardian_dr::mm2;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(2) else { return };
    let at = usize::from(u16::from_le_bytes([head[0], head[1]])).min(rest.len());
    let (key, value) = rest.split_at(at);
    let _ = mm2::parse_checkpoint(key, value, 0);
    let _ = mm2::parse_offset_sync(key, value);
});
