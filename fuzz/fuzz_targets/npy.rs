//! `.npy` files (model weights and agents' local data).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = guardian_fl::npy::read(data);
});
