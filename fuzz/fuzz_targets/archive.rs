//! The archive in object storage: segment files (Avro object container files of archived
//! records), segment keys and the per-topic manifest, as a restore reads them. The first
//! byte picks which.
#![no_main]

use guardian_archiver::segment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: {
        // segment::decode catches apache-avro's panics on malformed container headers and
        // returns an error; libFuzzer's hook would abort on the caught panic. Panics are
        // printed instead; one that escapes still aborts (it cannot unwind out of the
        // fuzzer's C entry point), so an uncaught panic is still a crash.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    },
    |data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else { return };
    match pick % 3 {
        0 => {
            let _ = segment::decode(rest);
        }
        1 => {
            if let Ok(key) = std::str::from_utf8(rest) {
                let _ = segment::parse_segment_key(key);
            }
        }
        _ => {
            if let Ok(m) = serde_json::from_slice::<segment::Manifest>(rest) {
                let _ = serde_json::to_vec(&m);
            }
        }
    }
    }
);
