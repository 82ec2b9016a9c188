//! Encounter files an agent publishes (NDJSON, and CSV with a header line).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for csv in [false, true] {
        let (good, _) = guardian_schemas::encounter_file::parse(text, csv);
        for e in &good {
            assert!(guardian_schemas::validate::encounter(e).is_ok(), "an accepted line is valid");
        }
    }
});
