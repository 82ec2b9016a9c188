//! safetensors files (the updates a site's trainer writes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guardian_fl::safetensors::read(data);
});
