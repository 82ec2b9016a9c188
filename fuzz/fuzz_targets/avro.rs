//! The Avro codec, every schema: generic decoding (as written) and typed decoding (the
//! consumers' path, serde_avro_fast), on raw and on header-framed input. A record that
//! decodes as its type encodes again (the producers' path) to bytes that decode to the
//! same record.
#![no_main]

use guardian_fuzz::{codec, framed};
use guardian_schemas::Record;
use guardian_schemas::records::*;
use libfuzzer_sys::fuzz_target;

fn round_trip<R: Record + PartialEq + std::fmt::Debug>(bytes: &[u8]) {
    let c = codec();
    if let Ok(record) = c.decode::<R>(bytes) {
        let again = c.encode(&record).expect("a decoded record encodes");
        let back = c.decode::<R>(&again).expect("its encoding decodes");
        // NaN is the one value not equal to itself: compare the encodings then.
        assert!(back == record || c.encode(&back).ok() == Some(again), "{record:?} came back as {back:?}");
    }
}

fn typed(bytes: &[u8]) {
    round_trip::<Encounter>(bytes);
    round_trip::<GradientUpdateChunk>(bytes);
    round_trip::<BudgetSpend>(bytes);
    round_trip::<SloEvent>(bytes);
    round_trip::<KpiRollup>(bytes);
    round_trip::<BudgetStatus>(bytes);
    round_trip::<PrivacyAlert>(bytes);
    round_trip::<ModelVersion>(bytes);
    round_trip::<RoundControl>(bytes);
    round_trip::<RoundMessage>(bytes);
    round_trip::<UnmaskShares>(bytes);
    round_trip::<ArchivedRecord>(bytes);
    round_trip::<DrAudit>(bytes);
    round_trip::<DeadLetter>(bytes);
}

fuzz_target!(|data: &[u8]| {
    let _ = codec().decode_value(data);
    typed(data);
    if let Some(bytes) = framed(data) {
        let _ = codec().decode_value(&bytes);
        typed(&bytes);
    }
});
