//! Secure aggregation for federated rounds (SecAgg+: Bonawitz et al. 2017 with the sparse
//! neighbour graph of Bell et al. 2020). Pure logic, no I/O: the Kafka transport lives in
//! the aggregator service and the agent.
//!
//! A round, as the parties see it:
//! 1. every party advertises two X25519 public keys, signed with its Ed25519 key;
//! 2. it Shamir-shares its self-mask seed and its mask key among its neighbours (threshold
//!    t), each share encrypted to its recipient (ChaCha20-Poly1305) and relayed;
//! 3. the aggregator signs the list of parties whose shares were all delivered;
//! 4. each party sends its quantized update plus its self mask plus ± one pairwise mask per
//!    neighbour on that list (AES-128-CTR keystreams keyed through HKDF), in chunks, signed
//!    once over the root of a hash tree of the chunks ([`merkle`]);
//! 5. the aggregator signs the lists of survivors and dropped parties (disjoint); each
//!    survivor returns its shares of the survivors' seeds and of the dropped parties' mask
//!    keys; the aggregator removes every mask and is left with the sum.

pub mod client;
pub mod graph;
pub mod keys;
pub mod merkle;
pub mod prg;
pub mod quantize;
pub mod round;
pub mod server;
pub mod shamir;
pub mod sim;

pub use client::Client;
pub use round::{
    EncryptedShare, Eviction, KeyAdvert, MaskedChunk, Proven, RoundConfig, Secret, SetStage, SignedSets, UnmaskResponse,
};
pub use server::{Accepted, RoundSum, Server, Stage};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SecAggError {
    #[error("invalid round configuration: {0}")]
    BadConfig(String),
    #[error(transparent)]
    Quantize(#[from] quantize::QuantizeError),
    #[error(transparent)]
    Shamir(#[from] shamir::ShamirError),
    #[error("party {0} is not a participant of this round")]
    UnknownParty(u32),
    #[error("party {0} is not taking part in this stage of the round")]
    Excluded(u32),
    #[error("party {from} is not a neighbour of party {to}")]
    NotNeighbour { from: u32, to: u32 },
    #[error("bad signature on the {what} of party {party}")]
    BadSignature { what: &'static str, party: u32 },
    #[error("bad aggregator signature")]
    BadAggregatorSignature,
    #[error("expected a {expected} list, got a {got} list")]
    WrongStage { expected: &'static str, got: &'static str },
    #[error("party {party} sent a low-order public key")]
    WeakKey { party: u32 },
    #[error("a share from party {from} does not decrypt or is malformed")]
    Undecryptable { from: u32 },
    #[error("conflicting messages: {what} (party {party})")]
    Equivocation { party: u32, what: &'static str },
    #[error("party {holder} holds no share of party {owner}")]
    MissingShare { owner: u32, holder: u32 },
    #[error("chunk {index} of party {party}: {why}")]
    BadChunk { party: u32, index: u32, why: &'static str },
    #[error("out of order: {0}")]
    OutOfOrder(&'static str),
    #[error("security rule: {0}")]
    Violation(String),
    #[error("round failed at {stage}: {have} parties, the threshold is {need}")]
    TooFew { stage: &'static str, have: usize, need: usize },
    #[error("round failed: cannot reconstruct the {secret} of party {party}: {source}")]
    Reconstruct { party: u32, secret: &'static str, source: shamir::ShamirError },
}

impl SecAggError {
    /// True when the round cannot finish (too few parties or shares), as opposed to one
    /// bad message that is refused while the round goes on.
    pub fn fails_round(&self) -> bool {
        matches!(self, SecAggError::TooFew { .. } | SecAggError::Reconstruct { .. })
    }
}
