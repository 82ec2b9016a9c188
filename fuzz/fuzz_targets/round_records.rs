//! Federated round records as the aggregator and agents read them: key advertisements,
//! encrypted shares, update chunks, unmask responses and control records (with their
//! settings turned into a round configuration).
#![no_main]

use guardian_federated::wire;
use guardian_fuzz::{codec, framed_as};
use guardian_schemas::Record;
use guardian_schemas::records::{DpUnit, GradientUpdateChunk, RoundControl, RoundMessage, RoundSettings, UnmaskShares};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datum)) = data.split_first() else { return };
    let c = codec();
    match pick % 4 {
        0 => {
            if let Ok(m) = c.decode::<RoundMessage>(&framed_as(RoundMessage::SCHEMA, datum)) {
                let _ = wire::advert_of(&m);
                let _ = wire::share_of(&m);
            }
        }
        1 => {
            if let Ok(ch) = c.decode::<GradientUpdateChunk>(&framed_as(GradientUpdateChunk::SCHEMA, datum)) {
                let _ = wire::chunk_of(small_round(), 0, &ch);
            }
        }
        2 => {
            if let Ok(u) = c.decode::<UnmaskShares>(&framed_as(UnmaskShares::SCHEMA, datum)) {
                let _ = wire::unmask_of(&u);
            }
        }
        _ => {
            if let Ok(ctl) = c.decode::<RoundControl>(&framed_as(RoundControl::SCHEMA, datum)) {
                let _ = wire::signed_sets_of(&ctl);
                let _ = wire::parties_of(&ctl.first);
                if let Some(s) = &ctl.settings {
                    let _ = wire::config_of(&ctl.session_id, ctl.round, s);
                }
            }
        }
    }
});

/// A valid round of three hospitals, 10 parameters in chunks of 4.
fn small_round() -> &'static guardian_secagg::RoundConfig {
    static ROUND: std::sync::OnceLock<guardian_secagg::RoundConfig> = std::sync::OnceLock::new();
    ROUND.get_or_init(|| wire::config_of("s", 1, &settings()).expect("a valid round"))
}

fn settings() -> RoundSettings {
    RoundSettings {
        model_version: 1,
        model_uri: None,
        model_sha256: None,
        participants: vec!["h001".into(), "h002".into(), "h003".into()],
        threshold: 2,
        neighbours: 2,
        dimension: 10,
        chunk_len: 4,
        clipping_range: 1.0,
        quantization_levels: 1 << 16,
        dp_unit: DpUnit::Hospital,
        clip_norm: 1.0,
        noise_multiplier: 1.0,
        sampling_rate: 1.0,
        delta: 1e-5,
        graph_seed: vec![7; 32],
        aggregator_key: vec![0; 32],
        stage_timeout_ms: 1000,
        local_steps: 1,
        learning_rate: 0.1,
    }
}
