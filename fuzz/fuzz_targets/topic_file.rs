//! Topic files (`topics/*.toml`): parsing and validation into a catalogue.
#![no_main]

use guardian_topics::Catalogue;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let registry = guardian_schemas::registry::Registry::embedded();
    if let Ok(c) = Catalogue::from_sources([(std::path::PathBuf::from("topics/fuzz.toml"), text.to_string())], registry)
    {
        for spec in c.specs() {
            let _ = c.name_of(spec);
        }
        let _ = c.with_prefix("p.");
    }
});
